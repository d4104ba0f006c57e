// A minimal parallel-for over an index range, on a persistent pool of std::threads.
#ifndef MLFORGE_PARALLEL_H_
#define MLFORGE_PARALLEL_H_

#include <cstdint>
#include <functional>

namespace mlforge {

// Threads used by kernels: env MLFORGE_NUM_THREADS, else the hardware concurrency.
int num_threads();

// Calls fn(begin, end) on disjoint chunks covering [0, n). Runs inline when n is
// below 2 * min_grain; otherwise splits across up to num_threads() threads: the caller
// plus num_threads() - 1 persistent workers (which spin ~200 us after a job, then sleep).
// A call made while the pool is busy (nested, or from another thread) gets threads of
// its own. The first exception thrown by any chunk is rethrown on the calling thread
// after all finish.
void parallel_for(int64_t n, int64_t min_grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace mlforge

#endif  // MLFORGE_PARALLEL_H_
