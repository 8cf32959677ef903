set terminal svg size 1100,800 dynamic font 'sans,11'
set output 'vit-tiny-mnist.svg'
set multiplot layout 2,2 title 'vit-tiny/mnist: growth with training step (mean over seeds)'
reset
set grid
set key top left
set xlabel 'training step'
set title 'max inf-norm (Table 2 definition)'
set logscale y
set format y '%g'
plot 'vit-tiny-mnist-vanilla-max_inf_norm.dat' using 1:2 with linespoints title 'vanilla'
reset
set grid
set key top left
set xlabel 'training step'
set title 'avg kurtosis'
set logscale y
set format y '%g'
plot 'vit-tiny-mnist-vanilla-avg_kurtosis.dat' using 1:2 with linespoints title 'vanilla'
reset
set grid
set key top left
set xlabel 'training step'
set title 'W8A8 - FP accuracy (points)'
unset logscale y
plot 'vit-tiny-mnist-vanilla-w8a8_gap.dat' using 1:2 with linespoints title 'vanilla'
reset
set grid
set key top left
set xlabel 'training step'
set title 'lowest activation bits within 1% of FP (W8)'
unset logscale y
plot 'vit-tiny-mnist-vanilla-safe_bits.dat' using 1:2 with linespoints title 'vanilla'
unset multiplot
