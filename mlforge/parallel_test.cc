#include "mlforge/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

namespace mlforge {
namespace {

TEST(ParallelFor, CoversEveryIndexOnce) {
  for (int64_t n : {0, 1, 7, 1000, 100003}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    parallel_for(n, 10, [&](int64_t b, int64_t e) {
      ASSERT_LE(b, e);
      for (int64_t i = b; i < e; ++i) hits[i]++;
    });
    for (auto& h : hits) ASSERT_EQ(h.load(), 1);
  }
}

TEST(ParallelFor, SmallRangesRunInline) {
  int calls = 0;  // not atomic: a second thread would be a data race the test could see
  parallel_for(15, 10, [&](int64_t b, int64_t e) {
    ++calls;
    EXPECT_EQ(b, 0);
    EXPECT_EQ(e, 15);
  });
  EXPECT_EQ(calls, 1);
}

TEST(ParallelFor, RethrowsWorkerExceptions) {
  // The last chunk runs on a worker thread whenever there is more than one chunk.
  const int64_t n = 1 << 20;
  EXPECT_THROW(parallel_for(n, 1,
                            [&](int64_t, int64_t e) {
                              if (e == n) throw std::invalid_argument("from the last chunk");
                            }),
               std::invalid_argument);
  EXPECT_GE(num_threads(), 1);
}

TEST(ParallelFor, BackToBackJobsFromConcurrentAndNestedCallers) {
  // Thousands of tiny jobs exercise the persistent pool's hand-off (a late worker must
  // never run a chunk of the next job); four callers at once, and calls from inside a
  // chunk, exercise the path taken while the pool is busy.
  std::atomic<int> failures{0};
  auto job = [&](int reps) {
    for (int rep = 0; rep < reps; ++rep) {
      std::vector<int> hits(64, 0);  // plain ints: each index belongs to exactly one chunk
      parallel_for(64, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[i] += 1;
      });
      for (int h : hits) failures += h != 1;
    }
  };
  job(5000);
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) callers.emplace_back(job, 500);
  for (auto& c : callers) c.join();
  std::atomic<int64_t> inner{0};
  parallel_for(8, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      parallel_for(100, 1, [&](int64_t ib, int64_t ie) { inner += ie - ib; });
    }
  });
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(inner.load(), 800);
}

}  // namespace
}  // namespace mlforge
