set terminal pngcairo size 1560,420 font ',9'
set output '/work/main/bench/results/scenario-g.png'
set multiplot layout 1,3
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.7
set yrange [0:*]
set xtics rotate by -30 nomirror
set grid ytics
unset key
set title 'time to ready'
set ylabel 's'
plot '/work/main/bench/results/scenario-g-0.dat' using 2:xtic(1) with histograms lc rgb '#4472c4', '' using 0:2:(sprintf('%.3g',$2)) with labels offset 0,0.7
set title 'VmRSS'
set ylabel 'MiB'
plot '/work/main/bench/results/scenario-g-1.dat' using 2:xtic(1) with histograms lc rgb '#4472c4', '' using 0:2:(sprintf('%.3g',$2)) with labels offset 0,0.7
set title 'propagation p99'
set ylabel 'ms'
plot '/work/main/bench/results/scenario-g-2.dat' using 2:xtic(1) with histograms lc rgb '#4472c4', '' using 0:2:(sprintf('%.3g',$2)) with labels offset 0,0.7
unset multiplot
