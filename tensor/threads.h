// One thread setting for the whole framework. QTLAB_NUM_THREADS (default: the number of cores)
// sets both the OpenMP team size used by our kernels and OpenBLAS's thread count, so the two never
// oversubscribe the machine. OpenBLAS is the OpenMP build: called from inside one of our parallel
// regions it runs single-threaded.
#pragma once

namespace qt {

// Reads QTLAB_NUM_THREADS once (invalid values are an error naming the variable).
int num_threads();
// Overrides the setting for the rest of the process (n >= 1).
void set_num_threads(int n);

}  // namespace qt
