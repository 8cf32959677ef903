set terminal svg size 1100,800 dynamic font 'sans,11'
set output 'bert-mini-text.svg'
set multiplot layout 2,2 title 'bert-mini/text: growth with training step (mean over seeds)'
reset
set grid
set key top left
set xlabel 'training step'
set title 'max inf-norm (Table 2 definition)'
set logscale y
set format y '%g'
plot 'bert-mini-text-clipped-max_inf_norm.dat' using 1:2 with linespoints title 'clipped', 'bert-mini-text-gated-linear-max_inf_norm.dat' using 1:2 with linespoints title 'gated-linear', 'bert-mini-text-gated-mlp-max_inf_norm.dat' using 1:2 with linespoints title 'gated-mlp', 'bert-mini-text-vanilla-max_inf_norm.dat' using 1:2 with linespoints title 'vanilla'
reset
set grid
set key top left
set xlabel 'training step'
set title 'avg kurtosis'
set logscale y
set format y '%g'
plot 'bert-mini-text-clipped-avg_kurtosis.dat' using 1:2 with linespoints title 'clipped', 'bert-mini-text-gated-linear-avg_kurtosis.dat' using 1:2 with linespoints title 'gated-linear', 'bert-mini-text-gated-mlp-avg_kurtosis.dat' using 1:2 with linespoints title 'gated-mlp', 'bert-mini-text-vanilla-avg_kurtosis.dat' using 1:2 with linespoints title 'vanilla'
reset
set grid
set key top left
set xlabel 'training step'
set title 'W8A8 / FP perplexity - 1 (%)'
unset logscale y
plot 'bert-mini-text-clipped-w8a8_gap.dat' using 1:2 with linespoints title 'clipped', 'bert-mini-text-gated-linear-w8a8_gap.dat' using 1:2 with linespoints title 'gated-linear', 'bert-mini-text-gated-mlp-w8a8_gap.dat' using 1:2 with linespoints title 'gated-mlp', 'bert-mini-text-vanilla-w8a8_gap.dat' using 1:2 with linespoints title 'vanilla'
reset
set grid
set key top left
set xlabel 'training step'
set title 'lowest activation bits within 1% of FP (W8)'
unset logscale y
plot 'bert-mini-text-clipped-safe_bits.dat' using 1:2 with linespoints title 'clipped', 'bert-mini-text-gated-linear-safe_bits.dat' using 1:2 with linespoints title 'gated-linear', 'bert-mini-text-gated-mlp-safe_bits.dat' using 1:2 with linespoints title 'gated-mlp', 'bert-mini-text-vanilla-safe_bits.dat' using 1:2 with linespoints title 'vanilla'
unset multiplot
