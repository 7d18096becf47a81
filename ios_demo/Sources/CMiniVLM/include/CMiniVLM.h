/*
 * CMiniVLM: the C module Swift imports. It re-exports the native core's C ABI (minivlm/minivlm.h, a symlink
 * to sdk/native/include/minivlm) and adds a few helpers that hide the core's "capacity, then retry with the
 * needed size" convention, which is awkward from Swift.
 *
 * Every helper returns a malloc'd buffer the caller frees with cmvlm_free, or NULL with *status set (never
 * MVLM_OK) and mvlm_last_error() describing the failure.
 */
#ifndef CMINIVLM_H
#define CMINIVLM_H

#include "minivlm/minivlm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Token ids of UTF-8 `text` (`length` bytes); *count receives their number. */
int64_t* cmvlm_tokenize(const mvlm_tokenizer* tokenizer, const char* text, size_t length, size_t* count,
                        mvlm_status* status);
/* The text of `ids` (NUL-terminated UTF-8). */
char* cmvlm_detokenize(const mvlm_tokenizer* tokenizer, const int64_t* ids, size_t count, mvlm_status* status);
/* A build file's path: "vocab", "vocabularies" or a graph name. */
char* cmvlm_manifest_file(const mvlm_manifest* manifest, const char* which, mvlm_status* status);
/* Detector class `index` (0 is background). */
char* cmvlm_manifest_class_name(const mvlm_manifest* manifest, int32_t index, mvlm_status* status);
/* Anchors (N, 4) of the config; *count receives N. */
float* cmvlm_make_anchors(const mvlm_config* config, size_t* count, mvlm_status* status);
void cmvlm_free(void* pointer);

/* --- Build checks (minivlm.h "Build checks") ------------------------------------------------------------ */

/* mvlm_compiled_cache_path: where the compiled form of `graph` is kept under `caches_dir`. */
char* cmvlm_compiled_cache_path(const mvlm_manifest* manifest, const char* caches_dir, const char* graph,
                                mvlm_status* status);

#ifdef __cplusplus
}
#endif

#endif /* CMINIVLM_H */
