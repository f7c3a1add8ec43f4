set terminal pngcairo size 1040,420 font ',9'
set output '/work/main/bench/results/scenario-c.png'
set multiplot layout 1,2
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.7
set yrange [0:*]
set xtics rotate by -30 nomirror
set grid ytics
unset key
set title 'opened per 1000 req: h2-persistent'
set ylabel 'connections / 1000 requests'
plot '/work/main/bench/results/scenario-c-0.dat' using 2:xtic(1) with histograms lc rgb '#4472c4', '' using 0:2:(sprintf('%.3g',$2)) with labels offset 0,0.7
set title 'opened per 1000 req: h1-churn'
set ylabel 'connections / 1000 requests'
plot '/work/main/bench/results/scenario-c-1.dat' using 2:xtic(1) with histograms lc rgb '#4472c4', '' using 0:2:(sprintf('%.3g',$2)) with labels offset 0,0.7
unset multiplot
