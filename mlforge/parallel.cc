#include "mlforge/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace mlforge {
namespace {

// Persistent workers for parallel_for. Decode calls a ~20-100 us kernel hundreds of times
// per token, so spawning threads per call (tens of us each) would cost more than the work.
// Chunks are claimed with a CAS on one word holding (job generation, chunk count, next
// chunk): a worker that wakes late can never claim a chunk of a newer job by mistake,
// and the caller claims chunks too, so a job finishes even if no worker ever runs.
class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) std::thread([this] { work(); }).detach();
  }

  // Runs fn(c) for c in [0, chunks) across the workers and the calling thread. Returns
  // false (running nothing) when another job holds the pool.
  bool try_run(int64_t chunks, const std::function<void(int64_t)>& fn) {
    std::unique_lock<std::mutex> busy(submit_mu_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    fn_ = &fn;
    error_ = nullptr;
    done_.store(0, std::memory_order_relaxed);
    const uint64_t gen = (state_.load() >> 32) + 1;
    state_.store(gen << 32 | static_cast<uint64_t>(chunks) << 16);
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lock(sleep_mu_);
      wake_.notify_all();
    }
    while (claim_and_run(gen)) {
    }
    for (int spins = 0; done_.load(std::memory_order_acquire) < chunks; ++spins) {
      if (spins > 64) std::this_thread::yield();
    }
    if (error_) std::rethrow_exception(error_);
    return true;
  }

 private:
  static constexpr uint64_t kField = 0xffff;
  static constexpr auto kSpin = std::chrono::microseconds(200);

  // Claims and runs one chunk of job `gen`; false when none is left (or gen is over).
  bool claim_and_run(uint64_t gen) {
    uint64_t s = state_.load();
    for (;;) {
      if ((s >> 32) != gen) return false;
      const uint64_t chunks = (s >> 16) & kField, next = s & kField;
      if (next >= chunks) return false;
      if (state_.compare_exchange_weak(s, s + 1)) {
        // Chunk `next` is claimed and not done, so the job (fn_) cannot change under us.
        try {
          (*fn_)(static_cast<int64_t>(next));
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mu_);
          if (!error_) error_ = std::current_exception();
        }
        done_.fetch_add(1, std::memory_order_acq_rel);
        return true;
      }
    }
  }

  void work() {
    uint64_t seen = state_.load() >> 32;
    for (;;) {
      // Spin briefly: the next kernel call usually comes within microseconds.
      auto until = std::chrono::steady_clock::now() + kSpin;
      uint64_t gen = state_.load() >> 32;
      for (int i = 0; gen == seen; ++i) {
        if ((i & 63) == 63) {
          if (std::chrono::steady_clock::now() > until) break;
          std::this_thread::yield();
        }
        gen = state_.load() >> 32;
      }
      if (gen == seen) {
        std::unique_lock<std::mutex> lock(sleep_mu_);
        sleepers_.fetch_add(1);
        wake_.wait(lock, [&] { return (state_.load() >> 32) != seen; });
        sleepers_.fetch_sub(1);
        gen = state_.load() >> 32;
      }
      seen = gen;
      while (claim_and_run(gen)) {
      }
    }
  }

  std::mutex submit_mu_;
  std::atomic<uint64_t> state_{0};  // generation << 32 | chunks << 16 | next chunk
  std::atomic<int64_t> done_{0};
  const std::function<void(int64_t)>* fn_ = nullptr;
  std::mutex error_mu_;
  std::exception_ptr error_;
  std::mutex sleep_mu_;
  std::condition_variable wake_;
  std::atomic<int> sleepers_{0};
};

Pool& pool() {
  // Never destroyed: detached workers may still be waiting when the process exits.
  static Pool* p = new Pool(num_threads() - 1);
  return *p;
}

// The fallback when the pool is busy (nested or concurrent calls): threads per call.
void run_on_new_threads(int64_t chunks, const std::function<void(int64_t)>& run) {
  std::exception_ptr error;
  std::mutex error_mu;
  auto guarded = [&](int64_t c) {
    try {
      run(c);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!error) error = std::current_exception();
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(chunks - 1));
  for (int64_t c = 1; c < chunks; ++c) workers.emplace_back(guarded, c);
  guarded(0);
  for (auto& t : workers) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace

int num_threads() {
  static const int n = [] {
    if (const char* v = std::getenv("MLFORGE_NUM_THREADS")) {
      int k = std::atoi(v);
      if (k > 0) return std::min(k, 1024);
    }
    unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(std::min(hw, 1024u));
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
  auto run = [&](int64_t c) { fn(n * c / chunks, n * (c + 1) / chunks); };
  if (!pool().try_run(chunks, run)) run_on_new_threads(chunks, run);
}

}  // namespace mlforge
