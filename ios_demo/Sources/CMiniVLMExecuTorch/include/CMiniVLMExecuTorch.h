/*
 * CMiniVLMExecuTorch: ExecuTorch's thread pool size for Swift. ExecuTorch's Swift/Objective-C API has no thread
 * setting; its C++ thread pool (extension/threadpool/threadpool.h, one per process, shared by the XNNPACK
 * delegate and the optimized kernels) has one.
 */
#ifndef CMINIVLM_EXECUTORCH_H
#define CMINIVLM_EXECUTORCH_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Resizes ExecuTorch's thread pool to `threads` (> 0; 0 keeps it as it is) and returns the size in effect
 * afterwards. Call it before loading a program and never while one runs: the reset replaces the pool. */
uint32_t cmvlm_executorch_set_threads(uint32_t threads);

/* The thread pool's size now. */
uint32_t cmvlm_executorch_threads(void);

#ifdef __cplusplus
}
#endif

#endif /* CMINIVLM_EXECUTORCH_H */
