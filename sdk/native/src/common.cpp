#include "common.hpp"

#include <iomanip>
#include <locale>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

namespace minivlm {
namespace {
thread_local char g_error[1024] = "";
}

void set_error(const char* message) {
  std::strncpy(g_error, message, sizeof(g_error) - 1);
  g_error[sizeof(g_error) - 1] = '\0';
}

std::string str_double(double value) {
  std::ostringstream out;
  out.imbue(std::locale::classic());
  out << std::setprecision(12) << value;
  return out.str();
}

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(MVLM_IO_ERROR, std::string(what) + " " + path + " cannot be opened");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(MVLM_IO_ERROR, std::string(what) + " " + path + " cannot be read");
  return data;
}

void copy_out(const std::string& value, char* buffer, size_t capacity, size_t* length) {
  require(length, "length");
  *length = value.size();
  if (capacity > 0) require(buffer, "buffer");
  if (capacity < value.size() + 1) {
    if (capacity > 0) buffer[0] = '\0';
    fail(MVLM_BUFFER_TOO_SMALL, "buffer holds " + str(capacity) + " bytes, " + str(value.size() + 1) + " needed");
  }
  std::memcpy(buffer, value.data(), value.size());
  buffer[value.size()] = '\0';
}

namespace {

void positive(int64_t v, const char* name) {
  if (v <= 0) fail(MVLM_INVALID_ARGUMENT, std::string("config.") + name + " is " + str(v) + ", expected > 0");
}

void finite(double v, const char* name) {
  if (!std::isfinite(v)) fail(MVLM_INVALID_ARGUMENT, std::string("config.") + name + " is not finite");
}

}  // namespace

const mvlm_config& checked(const mvlm_config* config) {
  require(config, "config");
  const mvlm_config& c = *config;
  positive(c.image_size, "image_size");
  if (c.image_size > 8192) fail(MVLM_INVALID_ARGUMENT, "config.image_size is " + str(c.image_size) + ", at most 8192");
  for (int k = 0; k < 3; ++k) {
    finite(c.pixel_mean[k], "pixel_mean");
    finite(c.pixel_std[k], "pixel_std");
    if (c.pixel_std[k] == 0.0) fail(MVLM_INVALID_ARGUMENT, "config.pixel_std has a zero");
  }
  if (c.min_level < 0 || c.min_level > 16) {
    fail(MVLM_INVALID_ARGUMENT, "config.min_level is " + str(c.min_level) + ", expected 0..16");
  }
  if (c.num_levels < 1 || c.num_levels > MVLM_MAX_LEVELS || c.min_level + c.num_levels > 24) {
    fail(MVLM_INVALID_ARGUMENT, "config.num_levels is " + str(c.num_levels) + ", expected 1.." + str(MVLM_MAX_LEVELS));
  }
  if (c.num_ratios < 1 || c.num_ratios > MVLM_MAX_RATIOS) {
    fail(MVLM_INVALID_ARGUMENT, "config.num_ratios is " + str(c.num_ratios) + ", expected 1.." + str(MVLM_MAX_RATIOS));
  }
  for (int k = 0; k < c.num_levels; ++k) finite(c.anchor_sizes[k], "anchor_sizes");
  for (int k = 0; k < c.num_ratios; ++k) {
    if (!(c.aspect_ratios[k] > 0.0) || !std::isfinite(c.aspect_ratios[k])) {
      fail(MVLM_INVALID_ARGUMENT, "config.aspect_ratios[" + str(k) + "] is " + str_double(c.aspect_ratios[k]) +
                                      ", expected > 0");
    }
  }
  for (int k = 0; k < 4; ++k) {
    if (!(c.rpn_box_coder_weights[k] != 0.0) || !(c.roi_box_coder_weights[k] != 0.0)) {
      fail(MVLM_INVALID_ARGUMENT, "config box coder weights must be non-zero");
    }
  }
  positive(c.pre_nms_top_n, "pre_nms_top_n");
  positive(c.post_nms_top_n, "post_nms_top_n");
  finite(c.rpn_nms_threshold, "rpn_nms_threshold");
  finite(c.roi_nms_threshold, "roi_nms_threshold");
  finite(c.score_threshold, "score_threshold");
  finite(c.min_box_size, "min_box_size");
  if (c.num_classes < 2) fail(MVLM_INVALID_ARGUMENT, "config.num_classes is " + str(c.num_classes) + ", expected >= 2");
  positive(c.num_attributes, "num_attributes");
  positive(c.representation_size, "representation_size");
  positive(c.max_regions, "max_regions");
  if (c.region_order != MVLM_REGION_ORDER_SCORE && c.region_order != MVLM_REGION_ORDER_LEFT_TO_RIGHT) {
    fail(MVLM_INVALID_ARGUMENT, "config.region_order is " + str(c.region_order) + ", expected 0 (score) or 1 (left to right)");
  }
  positive(c.vocab_size, "vocab_size");
  positive(c.hidden_size, "hidden_size");
  positive(c.num_layers, "num_layers");
  positive(c.num_heads, "num_heads");
  positive(c.head_dim, "head_dim");
  // num_heads is the caption caches' head count: the model's, or fewer for a pruned encoder (head_dim unchanged).
  if (c.hidden_size % c.head_dim || c.num_heads > c.hidden_size / c.head_dim) {
    fail(MVLM_INVALID_ARGUMENT, "config.head_dim " + str(c.head_dim) + " x num_heads " + str(c.num_heads) +
                                    " does not fit hidden_size " + str(c.hidden_size) + " (head_dim must divide it)");
  }
  if (c.max_text_len < 3) fail(MVLM_INVALID_ARGUMENT, "config.max_text_len is " + str(c.max_text_len) + ", expected >= 3");
  if (c.max_tags_len < 1 || c.max_text_len + c.max_tags_len != c.max_text_tags_len) {
    fail(MVLM_INVALID_ARGUMENT, "config.max_tags_len " + str(c.max_tags_len) + " is not max_text_tags_len " +
                                    str(c.max_text_tags_len) + " - max_text_len " + str(c.max_text_len));
  }
  if (c.region_dim != c.representation_size + 6) {
    fail(MVLM_INVALID_ARGUMENT, "config.region_dim is " + str(c.region_dim) + ", expected representation_size + 6 = " +
                                    str(c.representation_size + 6));
  }
  if (c.max_caption_tokens < 1 || c.max_caption_tokens > c.max_text_len - 2 ||
      c.max_caption_tokens > MVLM_MAX_CAPTION_TOKENS) {
    fail(MVLM_INVALID_ARGUMENT, "config.max_caption_tokens is " + str(c.max_caption_tokens) + ", expected 1.." +
                                    str(c.max_text_len - 2));
  }
  const int64_t specials[5] = {c.pad_id, c.unk_id, c.cls_id, c.sep_id, c.mask_id};
  const char* const names[5] = {"pad_id", "unk_id", "cls_id", "sep_id", "mask_id"};
  for (int k = 0; k < 5; ++k) {
    if (specials[k] < 0 || specials[k] >= c.vocab_size) {
      fail(MVLM_INVALID_ARGUMENT, std::string("config.") + names[k] + " is " + str(specials[k]) +
                                      ", expected a token id in [0, " + str(c.vocab_size) + ")");
    }
  }
  return c;
}

}  // namespace minivlm

extern "C" {

int32_t mvlm_api_version(void) { return MVLM_API_VERSION; }

const char* mvlm_last_error(void) { return minivlm::g_error; }

const char* mvlm_status_name(mvlm_status status) {
  switch (status) {
    case MVLM_OK: return "MVLM_OK";
    case MVLM_INVALID_ARGUMENT: return "MVLM_INVALID_ARGUMENT";
    case MVLM_BAD_INPUT: return "MVLM_BAD_INPUT";
    case MVLM_BAD_FILE: return "MVLM_BAD_FILE";
    case MVLM_IO_ERROR: return "MVLM_IO_ERROR";
    case MVLM_BUFFER_TOO_SMALL: return "MVLM_BUFFER_TOO_SMALL";
    case MVLM_CALLBACK_FAILED: return "MVLM_CALLBACK_FAILED";
    case MVLM_OUT_OF_MEMORY: return "MVLM_OUT_OF_MEMORY";
    case MVLM_INTERNAL: return "MVLM_INTERNAL";
    default: return "MVLM_UNKNOWN";
  }
}

mvlm_status mvlm_config_check(const mvlm_config* config) {
  return minivlm::guard([&] { minivlm::checked(config); });
}

}  // extern "C"
