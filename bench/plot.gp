# gnuplot -e "datafile='...'; outfile='...png'" bench/plot.gp
# Throughput and p99 latency vs offered load; index 0 libcoap, 1 coapgate.
set terminal pngcairo size 1000,450 noenhanced
set output outfile
set multiplot layout 1,2 title "coapgate (token publish, durable) vs libcoap coap-server-notls, one core each"
set xlabel "offered req/s"
set grid
set key top left
set ylabel "achieved req/s"
plot datafile index 0 using 1:2 with linespoints title "libcoap", \
     datafile index 1 using 1:2 with linespoints title "coapgate"
set ylabel "p99 latency (ms)"
set logscale y
plot datafile index 0 using 1:3 with linespoints title "libcoap", \
     datafile index 1 using 1:3 with linespoints title "coapgate"
unset multiplot
