/*
 * MiniVLM native core: the host steps of the MiniVLM pipeline (docs/ARCHITECTURE.md §5) as a small, stable C ABI.
 *
 *   preprocess -> [tee_stage1 graph] -> select_proposals -> [tee_stage2 graph] -> select_regions ->
 *   region_tokens -> pack_inputs -> [caption_prefix graph] -> caption_decode (calls [caption_step]) -> detokenize
 *
 * Every function here reproduces python_ref exactly (integer outputs bit for bit, floats to <= 1e-5); the
 * graphs themselves are run by the app's runtime (ExecuTorch, TFLite, Core ML). Used by android_demo (JNI)
 * and ios_demo (Swift).
 *
 * Conventions
 * - Every function returns mvlm_status; MVLM_OK is 0. On any other status, mvlm_last_error() gives a one-line
 *   message naming the bad value (thread-local, valid until the next mvlm_ call on the same thread).
 *   No C++ exception ever crosses this boundary; malformed input returns an error, never crashes.
 * - Opaque handles (mvlm_tokenizer, mvlm_json, mvlm_manifest) are created by *_load / *_parse and released by
 *   the matching *_free (which accepts NULL). Handles are immutable after creation: const functions may be
 *   called from several threads at once.
 * - Outputs go to caller-provided buffers. Where a size is only known after the work (token ids, strings),
 *   the function takes a capacity and reports the needed size; if the buffer is too small it returns
 *   MVLM_BUFFER_TOO_SMALL with the needed size set, so the caller can retry. Strings are UTF-8 and
 *   NUL-terminated when the capacity allows (capacity >= length + 1).
 * - Arrays are C-order (row-major), float32 unless stated; token ids are int64 (the graphs' dtype in the
 *   manifest; a runtime that wants int32 converts). Booleans are uint8 0/1.
 * - Sizes come from mvlm_config (filled from manifest.json by mvlm_manifest_config, or by the caller).
 */
#ifndef MINIVLM_MINIVLM_H
#define MINIVLM_MINIVLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MVLM_API_VERSION 1

/* ---------------------------------------------------------------------------------------------------------
 * Status and errors */

typedef int32_t mvlm_status;
enum {
  MVLM_OK = 0,
  MVLM_INVALID_ARGUMENT = 1, /* NULL pointer, negative/zero size, value out of range, shape mismatch */
  MVLM_BAD_INPUT = 2,        /* malformed user data: bad UTF-8, zero-size image, non-finite regions */
  MVLM_BAD_FILE = 3,         /* malformed vocab.txt / JSON / manifest (truncated, wrong type, missing key) */
  MVLM_IO_ERROR = 4,         /* a file cannot be opened or read */
  MVLM_BUFFER_TOO_SMALL = 5, /* the needed size was reported; call again with a larger buffer */
  MVLM_CALLBACK_FAILED = 6,  /* the caption step callback returned non-zero */
  MVLM_OUT_OF_MEMORY = 7,
  MVLM_INTERNAL = 8          /* a bug in the core: please report it with mvlm_last_error() */
};

/* Version of this header's ABI (MVLM_API_VERSION of the library that was built). */
int32_t mvlm_api_version(void);
/* The last error message of the calling thread ("" after a success). Never NULL. */
const char* mvlm_last_error(void);
/* A constant name for a status ("MVLM_BAD_FILE"); "MVLM_UNKNOWN" for other values. Never NULL. */
const char* mvlm_status_name(mvlm_status status);

/* ---------------------------------------------------------------------------------------------------------
 * Model configuration: the constants of the host steps (python_ref/config.py), as manifest.json gives them. */

#define MVLM_MAX_LEVELS 8 /* feature levels with anchors (P3..P7 is 5) */
#define MVLM_MAX_RATIOS 8 /* anchor aspect ratios per location */
#define MVLM_MAX_CAPTION_TOKENS 512

enum { MVLM_REGION_ORDER_SCORE = 0, MVLM_REGION_ORDER_LEFT_TO_RIGHT = 1 };

typedef struct mvlm_config {
  /* preprocessing */
  int32_t image_size;     /* S: the square input is S x S */
  double pixel_mean[3];   /* RGB, on 0..1 values */
  double pixel_std[3];
  /* anchors and proposals (RPN) */
  int32_t min_level;      /* first feature level (stride 2^min_level) */
  int32_t num_levels;
  double anchor_sizes[MVLM_MAX_LEVELS]; /* one per level */
  int32_t num_ratios;
  double aspect_ratios[MVLM_MAX_RATIOS]; /* h / w */
  double rpn_box_coder_weights[4];
  int32_t pre_nms_top_n;  /* per level */
  double rpn_nms_threshold;
  int32_t post_nms_top_n; /* proposals handed to stage 2 (padded) */
  double min_box_size;
  /* region selection (RoI head) */
  int32_t num_classes;    /* including background (class 0) */
  int32_t num_attributes;
  int32_t representation_size; /* region feature width D */
  double roi_box_coder_weights[4];
  double score_threshold;
  double roi_nms_threshold;
  int32_t max_regions;
  int32_t region_order;   /* MVLM_REGION_ORDER_* */
  /* fusion layout */
  int32_t vocab_size;
  int32_t hidden_size;
  int32_t num_layers;
  int32_t num_heads;      /* Hd, heads of the caption K/V tensors: the model's num_heads, or for a pruned encoder
                             the most heads a layer keeps (manifest fusion/heads_per_layer) */
  int32_t head_dim;       /* hidden_size / the model's num_heads */
  int32_t max_text_len;   /* C: [CLS] text [SEP] + padding; also the caption cache length */
  int32_t max_text_tags_len;
  int32_t max_tags_len;   /* max_text_tags_len - max_text_len */
  int32_t region_dim;     /* D + 6 */
  int32_t max_caption_tokens;
  /* tokenizer specials */
  int64_t pad_id, unk_id, cls_id, sep_id, mask_id;
} mvlm_config;

/* Checks a config for consistency (sizes positive, levels/ratios within bounds, region_dim = D + 6, ...). */
mvlm_status mvlm_config_check(const mvlm_config* config);

/* ---------------------------------------------------------------------------------------------------------
 * JSON (enough for manifest.json and golden/index.json). Values are addressed by JSON Pointer (RFC 6901):
 * "" is the root, "/cases/photo_coffee/width", "/tokenizer/0/ids/3". */

typedef struct mvlm_json mvlm_json;

enum { MVLM_JSON_NULL = 0, MVLM_JSON_BOOL = 1, MVLM_JSON_NUMBER = 2, MVLM_JSON_STRING = 3,
       MVLM_JSON_ARRAY = 4, MVLM_JSON_OBJECT = 5 };

mvlm_status mvlm_json_parse(const char* text, size_t length, mvlm_json** out);
mvlm_status mvlm_json_load(const char* path, mvlm_json** out);
void mvlm_json_free(mvlm_json* json);
/* Type of the value at `pointer` (MVLM_JSON_*); MVLM_INVALID_ARGUMENT if there is none. */
mvlm_status mvlm_json_type(const mvlm_json* json, const char* pointer, int32_t* type);
/* Elements of an array or members of an object. */
mvlm_status mvlm_json_size(const mvlm_json* json, const char* pointer, size_t* size);
mvlm_status mvlm_json_number(const mvlm_json* json, const char* pointer, double* value);
mvlm_status mvlm_json_bool(const mvlm_json* json, const char* pointer, int32_t* value);
/* A string value; `length` (bytes, without the NUL) is set even when the buffer is too small. */
mvlm_status mvlm_json_string(const mvlm_json* json, const char* pointer, char* buffer, size_t capacity, size_t* length);
/* The key of member `index` of an object, in file order. */
mvlm_status mvlm_json_key(const mvlm_json* json, const char* pointer, size_t index, char* buffer, size_t capacity,
                          size_t* length);

/* ---------------------------------------------------------------------------------------------------------
 * Manifest (manifest.json of a build folder, docs/ARCHITECTURE.md §6). */

typedef struct mvlm_manifest mvlm_manifest;

/* `path` is manifest.json or the build folder holding it. Checks schema_version and every field the host
 * steps need; MVLM_BAD_FILE names the first missing or malformed one. */
mvlm_status mvlm_manifest_load(const char* path, mvlm_manifest** out);
/* The same from memory; `folder` (may be NULL) is where relative file names resolve. */
mvlm_status mvlm_manifest_parse(const char* text, size_t length, const char* folder, mvlm_manifest** out);
void mvlm_manifest_free(mvlm_manifest* manifest);
mvlm_status mvlm_manifest_config(const mvlm_manifest* manifest, mvlm_config* config);
/* The parsed manifest.json itself, for fields this API does not wrap (owned by the manifest). */
const mvlm_json* mvlm_manifest_json(const mvlm_manifest* manifest);
/* Path of a file of the build: `which` is a graph name ("tee_stage1", "caption_step", ...), "vocab" or
 * "vocabularies"; the folder is prepended when the manifest was loaded from disk. A TFLite build's graphs all
 * name its one model.tflite (each is the signature `graphs.<name>.signature` in it). */
mvlm_status mvlm_manifest_file(const mvlm_manifest* manifest, const char* which, char* buffer, size_t capacity,
                               size_t* length);
/* Class names (index 0 is background) from the vocabularies file; loaded on first use. */
mvlm_status mvlm_manifest_num_classes(const mvlm_manifest* manifest, int32_t* count);
mvlm_status mvlm_manifest_class_name(const mvlm_manifest* manifest, int32_t index, char* buffer, size_t capacity,
                                     size_t* length);

/* ---------------------------------------------------------------------------------------------------------
 * Tokenizer: BERT uncased WordPiece over vocab.txt, identical to python_ref/tokenizer.py (clean text, isolate
 * CJK characters, NFD + strip accents, lowercase, split on whitespace and punctuation, greedy longest-match
 * WordPiece with "##", words over 100 characters become [UNK]). Special-token strings in text are not matched. */

typedef struct mvlm_tokenizer mvlm_tokenizer;

/* vocab.txt: one token per line, id = line number; must hold [PAD] [UNK] [CLS] [SEP] [MASK]. */
mvlm_status mvlm_tokenizer_load(const char* vocab_path, mvlm_tokenizer** out);
mvlm_status mvlm_tokenizer_parse(const char* vocab_text, size_t length, mvlm_tokenizer** out);
void mvlm_tokenizer_free(mvlm_tokenizer* tokenizer);
mvlm_status mvlm_tokenizer_vocab_size(const mvlm_tokenizer* tokenizer, int32_t* size);
/* Ids of [PAD], [UNK], [CLS], [SEP], [MASK], in that order. */
mvlm_status mvlm_tokenizer_special_ids(const mvlm_tokenizer* tokenizer, int64_t ids[5]);
/* Token ids of UTF-8 `text` (`length` bytes), without [CLS]/[SEP], untruncated. `count` is always set. */
mvlm_status mvlm_tokenize(const mvlm_tokenizer* tokenizer, const char* text, size_t length, int64_t* ids,
                          size_t capacity, size_t* count);
/* Text of `ids`, skipping the specials (HF WordPiece decoder with cleanup). `length` is always set. */
mvlm_status mvlm_detokenize(const mvlm_tokenizer* tokenizer, const int64_t* ids, size_t count, char* buffer,
                            size_t capacity, size_t* length);
/* The vocabulary entry of one id. */
mvlm_status mvlm_token_text(const mvlm_tokenizer* tokenizer, int64_t id, char* buffer, size_t capacity,
                            size_t* length);

/* ---------------------------------------------------------------------------------------------------------
 * Preprocessing (python_ref/preprocess.py): letterbox into the top-left of an S x S square, scale
 * S / max(H, W), resized size floor(H*scale + 0.5) x floor(W*scale + 0.5), bilinear with half-pixel centres
 * and no antialias on float 0..255, (v / 255 - mean) / std, padding 0. */

enum { MVLM_PIXELS_RGB8 = 0, MVLM_PIXELS_RGBA8 = 1, MVLM_PIXELS_BGRA8 = 2, MVLM_PIXELS_BGR8 = 3 };

typedef struct mvlm_letterbox {
  int32_t height, width;                 /* the original image */
  double scale;                          /* input pixels per original pixel */
  int32_t resized_height, resized_width; /* the image's part of the input */
} mvlm_letterbox;

/* `pixels`: height rows of `row_bytes` bytes (>= width * bytes per pixel); alpha is ignored.
 * `out`: (1, 3, S, S) float32, `out_count` floats (>= 3*S*S). `letterbox` may be NULL. */
mvlm_status mvlm_preprocess(const mvlm_config* config, const uint8_t* pixels, int32_t width, int32_t height,
                            size_t row_bytes, int32_t pixel_format, float* out, size_t out_count,
                            mvlm_letterbox* letterbox);

/* ---------------------------------------------------------------------------------------------------------
 * Anchors, box coding, NMS, proposals (python_ref/rpn.py, postprocess.py). Boxes are xyxy float32. */

/* Number of anchors N over all levels, and (if `level_sizes` is not NULL) per level (num_levels entries). */
mvlm_status mvlm_anchor_count(const mvlm_config* config, size_t* count, int64_t* level_sizes);
/* Anchors (N, 4) in input pixels, in the order of the RPN outputs: per level (H, W, A), levels concatenated. */
mvlm_status mvlm_make_anchors(const mvlm_config* config, float* anchors, size_t capacity_boxes);
/* torchvision BoxCoder.decode: `n` deltas (n, 4) applied to `references` (n, 4); dw, dh clamped at log(1000/16). */
mvlm_status mvlm_decode_boxes(const float* deltas, const float* references, size_t n, const double weights[4],
                              float* boxes);
/* Greedy NMS: indices of kept boxes by descending score (ties: lower index first); IoU > threshold drops. */
mvlm_status mvlm_nms(const float* boxes, const float* scores, size_t n, double iou_threshold, int64_t* keep,
                     size_t* kept);
/* RPN proposals of one image from tee_stage1's objectness (N,) and deltas (N, 4), and the anchors (N, 4):
 * per level top pre_nms_top_n, decode, clip to S x S, drop boxes smaller than min_box_size, NMS; then the
 * best post_nms_top_n overall. `proposals` (post_nms_top_n, 4), zero rows past `valid`; `valid` (post_nms_top_n,). */
mvlm_status mvlm_select_proposals(const mvlm_config* config, const float* objectness, const float* deltas,
                                  const float* anchors, size_t num_anchors, float* proposals, uint8_t* valid);

/* ---------------------------------------------------------------------------------------------------------
 * Region selection (python_ref/postprocess.py select_regions): softmax, class-specific decode, clip, drop
 * padding and background, score >= threshold, per-class NMS, top max_regions, then config.region_order. */

typedef struct mvlm_regions {
  int32_t count;             /* K <= max_regions; rows past K are zero */
  float* boxes;              /* (max_regions, 4) xyxy, input pixels */
  int64_t* labels;           /* (max_regions,) class index >= 1 */
  float* scores;             /* (max_regions,) */
  int64_t* proposal_indices; /* (max_regions,) the proposal row of each region */
} mvlm_regions;

/* `proposals` (R, 4), `valid` (R,), `class_logits` (R, num_classes), `box_deltas` (R, num_classes * 4),
 * R = num_proposals (post_nms_top_n). The caller owns the four output arrays of `regions`. */
mvlm_status mvlm_select_regions(const mvlm_config* config, const float* proposals, const uint8_t* valid,
                                size_t num_proposals, const float* class_logits, const float* box_deltas,
                                mvlm_regions* regions);

/* Region tokens (K, D + 6) = features[proposal_indices[k]] (D floats, `features` is (R, D)) ⊕ OSCAR geometry
 * [x1/W, y1/H, x2/W, y2/H, w/W, h/H] of the box in original-image pixels (box / scale, clipped to the image).
 * `image_boxes` (K, 4) receives those boxes (may be NULL). */
mvlm_status mvlm_region_tokens(const mvlm_config* config, const mvlm_regions* regions, const float* features,
                               size_t num_proposals, const mvlm_letterbox* letterbox, float* tokens,
                               float* image_boxes);

/* ---------------------------------------------------------------------------------------------------------
 * Fusion inputs (python_ref/packing.py pack_inputs): [CLS] text [SEP] pad | tags [SEP] pad | regions. */

typedef struct mvlm_fusion_inputs {
  int64_t* input_ids;      /* (1, max_text_tags_len) */
  int64_t* token_type_ids; /* (1, max_text_tags_len) */
  float* token_mask;       /* (1, max_text_tags_len) */
  float* regions;          /* (1, max_regions, region_dim) */
  float* region_mask;      /* (1, max_regions) */
} mvlm_fusion_inputs;

/* `text` (UTF-8, may be NULL when require_text is 0) and `tags` (class names in region order; whole tags are
 * kept while they fit in max_tags_len - 1 tokens); `region_tokens` (num_regions, region_dim), finite.
 * The caption_prefix graph's inputs are the tag part: input_ids + max_text_len, token_type_ids + max_text_len,
 * token_mask + max_text_len, regions, region_mask. */
mvlm_status mvlm_pack_inputs(const mvlm_tokenizer* tokenizer, const mvlm_config* config, const char* text,
                             size_t text_length, const char* const* tags, size_t num_tags,
                             const float* region_tokens, size_t num_regions, int32_t require_text,
                             mvlm_fusion_inputs* out);

/* ---------------------------------------------------------------------------------------------------------
 * Caption decoding (python_ref/generate.py): greedy (num_beams = 1) or beam search over the cached
 * caption_step graph. The core keeps the caption K/V cache, reorders it between beams and builds every
 * input of the step graph; the callback only runs the graph.
 * Shapes: N = num_beams, L = num_layers, Hd = num_heads, P = max_tags_len + max_regions, C = max_text_len,
 * d = head_dim, V = vocab_size. */

typedef struct mvlm_step_request {
  int32_t step;                /* t >= 1: the [MASK] sits at position t */
  int32_t num_beams;           /* N: the batch of every tensor below */
  const int64_t* history;      /* (N, t) tokens at positions 0..t-1, [CLS] first (informational) */
  const int64_t* token_ids;    /* (N, 2): [token at t-1, [MASK]] */
  const int64_t* position_ids; /* (N, 2): [t-1, t] */
  const float* prefix_keys;    /* (L, N, Hd, P, d) */
  const float* prefix_values;  /* (L, N, Hd, P, d) */
  const float* prefix_mask;    /* (N, P) */
  const float* cache_keys;     /* (L, N, Hd, C, d) */
  const float* cache_values;   /* (L, N, Hd, C, d) */
  const float* cache_mask;     /* (N, C) */
  float* mask_logits;          /* out: (N, V) */
  float* new_keys;             /* out: (L, N, Hd, 1, d) */
  float* new_values;           /* out: (L, N, Hd, 1, d) */
} mvlm_step_request;

/* Runs caption_step on `request` and fills its three outputs. Returns 0 on success; anything else stops
 * decoding with MVLM_CALLBACK_FAILED. */
typedef int32_t (*mvlm_step_fn)(void* user_data, const mvlm_step_request* request);

typedef struct mvlm_caption_options {
  int32_t num_beams;          /* 1 = greedy; >= 2 beam search */
  double length_penalty;      /* beam search: score = sum logprob / length^penalty (python_ref default 1.0) */
  int32_t max_caption_tokens; /* 0 = config.max_caption_tokens; else 1..max_text_len - 2 */
} mvlm_caption_options;

typedef struct mvlm_caption {
  int32_t num_tokens;                         /* generated tokens without [CLS] and the final [SEP] */
  int64_t token_ids[MVLM_MAX_CAPTION_TOKENS];
  double score;    /* greedy: sum of chosen log-probs; beam: that sum / steps^length_penalty */
  int32_t finished; /* 1 if it ended with [SEP], 0 if cut at max_caption_tokens */
} mvlm_caption;

/* `prefix_keys`, `prefix_values`: caption_prefix's outputs for one image, (L, 1, Hd, P, d);
 * `inputs`: the packed inputs the prefix was computed from (its tag_mask and region_mask form prefix_mask).
 * Decode the ids with mvlm_detokenize. */
mvlm_status mvlm_caption_decode(const mvlm_config* config, const mvlm_fusion_inputs* inputs,
                                const float* prefix_keys, const float* prefix_values,
                                const mvlm_caption_options* options, mvlm_step_fn step, void* user_data,
                                mvlm_caption* caption);

/* =========================================================================================================
 * Build checks: what an app decides about a build folder before it runs any graph. Verification of the
 * manifest and every file it lists, the runtime plan (backend, accelerator, compute units, threads) a platform
 * can honour for the build, the cache path of a compiled Core ML graph, and the size to decode a photo at.
 * These read only manifest.json's own entries (target, delegate, compute_units, tools, files, preprocessing),
 * so they work for builds of every model family (MiniVLM and EfficientVLM).
 * ========================================================================================================= */

/* The manifest of a build folder (or its manifest.json) of any model family. A MiniVLM build loads exactly as
 * with mvlm_manifest_load; a build of another family (EfficientVLM) loads without the MiniVLM host-step config:
 * mvlm_manifest_config and the class-name functions then fail with MVLM_BAD_FILE naming the family. */
mvlm_status mvlm_build_manifest_load(const char* path, mvlm_manifest** out);

/* Verifies the build folder `folder` for `runtime`, one of "executorch", "litert", "coreml", "coreai":
 * - manifest.json parses, has schema_version 1, a known family and target, and its "manifest_sha256" equals the
 *   sha256 of its canonical JSON (converters/manifest.py manifest_digest: every other entry, sorted keys, no
 *   spaces, non-ASCII kept, numbers as Python writes them): an edit after the build is refused;
 * - every entry of "files" is a path inside the folder (no "..", no symbolic link) to a regular file with that
 *   sha256 (the one-line error names the file and both hash prefixes); the graph files, vocabularies and
 *   weights are among them. The files under "golden_dir" (the parity goldens) are skipped when that folder is
 *   absent, so an app may ship a build without them; when it is there, each of them is checked;
 * - `runtime` runs the build's target: executorch -> "executorch", tflite -> "litert", coreml -> "coreml",
 *   coreai -> "coreai";
 * - `runtime_version` (NULL: not checked) is compatible with the version of the tool that exported the build
 *   (manifest tools["executorch"], tools["ai-edge-litert"], tools["coremltools"], tools["coreai-core"]): the same
 *   major version and a minor version at least the build's ("1.5.1" runs a build of "1.5.0"; "1.4.2" and
 *   "2.0.0" do not).
 * Status: MVLM_IO_ERROR (no manifest.json, a file cannot be read), MVLM_BAD_FILE (a malformed manifest, a
 * missing or altered file), MVLM_INVALID_ARGUMENT (an unknown runtime, a runtime or version the build does not
 * fit). Reads every byte of the build with a portable SHA-256 (1.3 s per 100 MiB measured on a shared 2-core x86
 * server, where OpenSSL's SHA-NI code takes 0.17 s). The demo apps verify at every load, which costs about
 * 0.2 s for a demo build of ~15 MB; an app with builds of hundreds of MB may verify once after installing one. */
mvlm_status mvlm_build_verify(const char* folder, const char* runtime, const char* runtime_version);

typedef struct mvlm_runtime_request {
  const char* platform;      /* "android" | "ios" */
  const char* accelerator;   /* Android: "auto" | "cpu" | "gpu" | "npu" (NULL = "auto"); iOS: NULL or "auto" */
  const char* compute_units; /* iOS: "auto" | "all" | "cpu_only" | "cpu_and_gpu" | "cpu_and_ne" (NULL = "auto");
                                Android: NULL or "auto" */
  int32_t threads;           /* 0 = auto; > 0 requested; < 0 is an error */
  int32_t available_cores;   /* the device's cores, >= 1 */
} mvlm_runtime_request;

typedef struct mvlm_runtime_plan {
  char backend[16];       /* "executorch" | "litert" | "coreml" | "coreai" */
  char accelerator[8];    /* "cpu" | "gpu" | "npu"; "" for Core ML and Core AI (compute units say it) and for
                             ExecuTorch's Core ML delegate */
  char compute_units[16]; /* coreml: "all" | "cpu_only" | "cpu_and_gpu" | "cpu_and_ne"; coreai: the Core AI
                             runner's names "default" | "cpu_only" | "gpu" | "neural_engine"; "" otherwise */
  int32_t threads;        /* CPU threads for ExecuTorch / LiteRT; 0 for Core ML and Core AI (they schedule their own) */
  char note[256];         /* what was changed or is worth showing, "; "-separated ("" when nothing) */
} mvlm_runtime_plan;

/* The plan a platform can honour for the build (one-line MVLM_INVALID_ARGUMENT naming the build's target or
 * delegate, and what to convert instead, when it cannot):
 * android - executorch build: backend "executorch" on the CPU (an XNNPACK or portable program; "gpu"/"npu" are
 *             refused: convert with --target tflite --delegate gpu or nnapi); its Core ML delegate is refused;
 *           tflite build: backend "litert"; accelerator "auto" follows the build's delegate (xnnpack -> cpu,
 *             gpu -> gpu, nnapi -> npu: NNAPI is deprecated since Android 15 and LiteRT's NPU accelerator runs
 *             the build instead, said in the note); an explicit "cpu"/"gpu"/"npu" is honoured;
 *           coreml and coreai builds are refused.
 * ios     - coreml build: backend "coreml", compute units "auto" -> the manifest's "compute_units" (or "all");
 *           coreai build: backend "coreai", compute units mapped to the Core AI runner's names (auto -> the
 *             manifest's, or "default"; all -> default, cpu_only -> cpu_only, cpu_and_gpu -> gpu, cpu_and_ne ->
 *             neural_engine);
 *           executorch build: backend "executorch" on the CPU (XNNPACK/portable; compute units other than "auto"
 *             or "cpu_only" are refused), or through its Core ML delegate, whose compute units were fixed at export;
 *           tflite builds are refused.
 * threads (ExecuTorch, LiteRT): 0 -> min(available_cores, 4); more than available_cores -> available_cores, with a
 * note; negative -> error. Core ML and Core AI get 0 (a requested count is noted as not applicable). */
mvlm_status mvlm_plan_runtime(const mvlm_manifest* manifest, const mvlm_runtime_request* request,
                              mvlm_runtime_plan* plan);

/* "<caches_dir>/minivlm-compiled/<first 16 hex of manifest_sha256>/<stem>.mlmodelc", <stem> the graph's file name
 * without its extension ("model" for a multifunction "model.mlpackage", so its graphs share one compilation): where
 * an app keeps the compiled form of a Core ML graph, keyed by the manifest's own checksum, so that a changed build
 * never reuses a stale compilation. `caches_dir` must be absolute (a trailing '/' is dropped); `graph` must be one
 * of the manifest's "graphs". Caller buffer as mvlm_manifest_file. */
mvlm_status mvlm_compiled_cache_path(const mvlm_manifest* manifest, const char* caches_dir, const char* graph,
                                     char* buffer, size_t capacity, size_t* length);

/* How large to decode a `width` x `height` photo so that preprocessing loses nothing and memory stays small.
 * The target (tw, th) is what preprocessing resizes the image to, at input size S (MiniVLM: config image_size,
 * letterboxed: scale = S / max(W, H), tw = floor(W*scale + 0.5), th = floor(H*scale + 0.5), each at least 1 and
 * at most S; EfficientVLM: preprocessing "size", the whole image stretched to tw = th = S). Never upscaled:
 * need_w = min(W, tw), need_h = min(H, th).
 * sample_size (Android BitmapFactory inSampleSize): the largest power of two p with floor(W / p) >= need_w and
 *   floor(H / p) >= need_h (floor: decoders that round down still deliver enough pixels).
 * max_side (iOS kCGImageSourceThumbnailMaxPixelSize, aspect kept): the smallest longest side L' whose thumbnail
 *   has both sides >= the need even when the shorter side is rounded down: max(ceil(need_w * L / W),
 *   ceil(need_h * L / H)), at most L = max(W, H). MiniVLM: usually S; EfficientVLM: S times the aspect ratio.
 * MVLM_BAD_INPUT for a zero-size image, MVLM_INVALID_ARGUMENT for a negative one. */
mvlm_status mvlm_decode_size(const mvlm_manifest* manifest, int32_t width, int32_t height, int32_t* sample_size,
                             int32_t* max_side);

/* =========================================================================================================
 * EfficientVLM host steps (python_ref/efficientvlm/pipeline.py, preprocess.py, generate.py), for builds whose
 * manifest says "family": "efficientvlm". Its graphs (vision, text_feature, match, vqa, caption_step) run in
 * the app's runtime; these functions make their inputs and decode the caption:
 *
 *   mvlm_evlm_preprocess -> [vision] -> image_tokens ─┬─ mvlm_evlm_caption_decode (calls [caption_step])
 *                                                     ├─ mvlm_evlm_pack_text -> [vqa] -> argmax
 *   text -> mvlm_evlm_pack_text -> [text_feature]     └─ mvlm_evlm_pack_text -> [match] -> softmax[1]
 *
 * Same conventions as above (status, mvlm_last_error, caller-owned buffers); the tokenizer is mvlm_tokenizer
 * loaded from the build's vocab.txt. mvlm_manifest_load refuses these builds: read the config with
 * mvlm_evlm_config_load. */

typedef struct mvlm_evlm_config {
  int32_t image_size;       /* S: every image is resized to S x S (aspect ratio not kept) */
  double pixel_mean[3];     /* RGB, on 0..1 values */
  double pixel_std[3];
  int32_t num_image_tokens; /* N = (S / patch_size)^2 + 1: image_tokens is (1, N, vision_width) */
  int32_t vision_width;
  int32_t embed_dim;        /* E: image_feature and text_feature are (1, E) */
  int32_t max_text_len;     /* T: input_ids and token_mask are (1, T); caption_step's token_logits (1, T, V) */
  int32_t vocab_size;       /* V */
  int32_t num_answers;      /* vqa's answer_logits (1, A) */
  int64_t pad_id, unk_id, cls_id, sep_id, mask_id;
} mvlm_evlm_config;

/* Checks a config for consistency (sizes positive, T >= 3, special ids inside the vocabulary). */
mvlm_status mvlm_evlm_config_check(const mvlm_evlm_config* config);
/* Reads model.config (vision.image_size, pixel_mean/std, patch_size, width; text.max_text_len, vocab_size;
 * embed_dim, num_answers) and tokenizer.specials from manifest.json (`path`: the file or its build folder).
 * MVLM_BAD_FILE names the first missing or malformed field, or a build of another family. */
mvlm_status mvlm_evlm_config_load(const char* path, mvlm_evlm_config* config);
mvlm_status mvlm_evlm_config_parse(const char* text, size_t length, mvlm_evlm_config* config);

/* Pillow's Image.resize((S, S), BICUBIC) of an 8-bit image (python_ref/efficientvlm/preprocess.py
 * resize_bicubic, bit for bit): separable Keys cubic (a = -0.5) widened by the downscale factor, fixed-point
 * weights, horizontal pass then vertical, each rounded and clipped to uint8 and skipped when that side is
 * already S. `pixels` as for mvlm_preprocess (alpha ignored); `out` (S, S, 3) RGB uint8, `out_count` >= 3*S*S. */
mvlm_status mvlm_evlm_resize(int32_t size, const uint8_t* pixels, int32_t width, int32_t height, size_t row_bytes,
                             int32_t pixel_format, uint8_t* out, size_t out_count);
/* The vision graph's `images` (1, 3, S, S) float32: mvlm_evlm_resize to config->image_size, then
 * (v / 255 - mean) / std in float32. `out_count` >= 3*S*S. */
mvlm_status mvlm_evlm_preprocess(const mvlm_evlm_config* config, const uint8_t* pixels, int32_t width, int32_t height,
                                 size_t row_bytes, int32_t pixel_format, float* out, size_t out_count);

/* `[CLS] text [SEP]` then [PAD] to max_text_len: `input_ids` (T,) and `token_mask` (T,) (1 on [CLS] text [SEP]),
 * the text inputs of text_feature, match and vqa. MVLM_BAD_INPUT for text without tokens or longer than
 * max_text_len - 2 tokens. */
mvlm_status mvlm_evlm_pack_text(const mvlm_tokenizer* tokenizer, const mvlm_evlm_config* config, const char* text,
                                size_t length, int64_t* input_ids, float* token_mask);
/* The caption prompt "[CLS] a picture of" (python_ref/efficientvlm/generate.py prompt_ids) padded the same way;
 * `prompt_length` (may be NULL) gets its token count. */
mvlm_status mvlm_evlm_caption_prompt(const mvlm_tokenizer* tokenizer, const mvlm_evlm_config* config,
                                     int64_t* input_ids, float* token_mask, int32_t* prompt_length);

typedef struct mvlm_evlm_step_request {
  int32_t step;               /* t: the tokens so far are positions 0..t-1 (the prompt first) */
  const int64_t* input_ids;   /* (1, T): the tokens so far, [PAD] after them */
  const float* token_mask;    /* (1, T): 1 on positions 0..t-1 */
  float* token_logits;        /* out: caption_step's (1, T, V); the core reads row t-1 */
} mvlm_evlm_step_request;

/* Runs caption_step (image_tokens held by the callback, input_ids, token_mask) and fills token_logits.
 * Returns 0 on success; anything else stops decoding with MVLM_CALLBACK_FAILED. */
typedef int32_t (*mvlm_evlm_step_fn)(void* user_data, const mvlm_evlm_step_request* request);

typedef struct mvlm_evlm_caption {
  int32_t num_tokens;                          /* generated tokens after the prompt, without the final [SEP] */
  int64_t token_ids[MVLM_MAX_CAPTION_TOKENS];
  int32_t finished;                            /* 1 if [SEP] ended it, 0 if it reached max_text_len */
} mvlm_evlm_caption;

/* Greedy decoding (python_ref/efficientvlm/pipeline.py caption_tokens): one `step` call per token from the prompt
 * on, next token = argmax of token_logits[t-1] (first maximum), until [SEP] or max_text_len tokens in all.
 * MVLM_BAD_INPUT if that row holds a non-finite value. Decode the ids with mvlm_detokenize. */
mvlm_status mvlm_evlm_caption_decode(const mvlm_tokenizer* tokenizer, const mvlm_evlm_config* config,
                                     mvlm_evlm_step_fn step, void* user_data, mvlm_evlm_caption* caption);

/* ========================================================================================================= */

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MINIVLM_MINIVLM_H */
