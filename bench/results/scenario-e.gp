set terminal pngcairo size 1560,420 font ',9'
set output '/work/main/bench/results/scenario-e.png'
set multiplot layout 1,3
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.7
set yrange [0:*]
set xtics rotate by -30 nomirror
set grid ytics
unset key
set title 'added latency p50 (ms)'
set ylabel 'ms'
plot '/work/main/bench/results/scenario-e-0.dat' using 2:xtic(1) with histograms lc rgb '#4472c4', '' using 0:2:(sprintf('%.3g',$2)) with labels offset 0,0.7
set title 'added latency p99 (ms)'
set ylabel 'ms'
plot '/work/main/bench/results/scenario-e-1.dat' using 2:xtic(1) with histograms lc rgb '#4472c4', '' using 0:2:(sprintf('%.3g',$2)) with labels offset 0,0.7
set title 'added latency p99.9 (ms)'
set ylabel 'ms'
plot '/work/main/bench/results/scenario-e-2.dat' using 2:xtic(1) with histograms lc rgb '#4472c4', '' using 0:2:(sprintf('%.3g',$2)) with labels offset 0,0.7
unset multiplot
