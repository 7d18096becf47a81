// ExecuTorch's thread pool from C: the two calls runners make in C++
// (`executorch::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(n)`, as
// executorch/extension/pybindings' _unsafe_reset_threadpool does).
//
// The prebuilt ExecuTorch frameworks link the thread pool (the "threadpool" binary target that backend_xnnpack
// and kernels_optimized depend on) but export no header for it, so the class is declared here with exactly the
// member functions called, as extension/threadpool/threadpool.h declares them (ExecuTorch 1.5): a call binds to
// the library's symbols by name and signature, and no member or layout of the class is used here.

#include "CMiniVLMExecuTorch.h"

#include <cstddef>
#include <cstdint>

namespace executorch::extension::threadpool {
class ThreadPool final {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace {
uint32_t pool_size(const executorch::extension::threadpool::ThreadPool* pool) {
  return pool == nullptr ? 0 : static_cast<uint32_t>(pool->get_thread_count());
}
}  // namespace

extern "C" uint32_t cmvlm_executorch_set_threads(uint32_t threads) {
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (pool != nullptr && threads > 0) {
    pool->_unsafe_reset_threadpool(threads);  // returns early when the size is already `threads`
  }
  return pool_size(pool);
}

extern "C" uint32_t cmvlm_executorch_threads(void) {
  return pool_size(executorch::extension::threadpool::get_threadpool());
}
