#include "mlforge/parallel.h"

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace mlforge {

int num_threads() {
  static const int n = [] {
    if (const char* v = std::getenv("MLFORGE_NUM_THREADS")) {
      int k = std::atoi(v);
      if (k > 0) return k;
    }
    unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
  }();
  return n;
}

void parallel_for(int64_t n, int64_t min_grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  min_grain = std::max<int64_t>(min_grain, 1);
  int64_t chunks = std::min<int64_t>(num_threads(), n / min_grain);
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mu;
  auto run = [&](int64_t c) {
    int64_t begin = n * c / chunks;
    int64_t end = n * (c + 1) / chunks;
    try {
      fn(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!error) error = std::current_exception();
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(chunks - 1));
  for (int64_t c = 1; c < chunks; ++c) workers.emplace_back(run, c);
  run(0);
  for (auto& t : workers) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace mlforge
