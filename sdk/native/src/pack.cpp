// Fusion inputs, python_ref/packing.py `pack_inputs`: [CLS] text [SEP] pad | tags [SEP] pad | regions.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common.hpp"
#include "handles.hpp"
#include "tokenizer.hpp"


using minivlm::fail;
using minivlm::require;
using minivlm::str;

extern "C" {

mvlm_status mvlm_pack_inputs(const mvlm_tokenizer* tokenizer, const mvlm_config* config, const char* text,
                             size_t text_length, const char* const* tags, size_t num_tags,
                             const float* region_tokens, size_t num_regions, int32_t require_text,
                             mvlm_fusion_inputs* out) {
  return minivlm::guard([&] {
    require(tokenizer, "tokenizer");
    const mvlm_config& c = minivlm::checked(config);
    require(out, "out");
    require(out->input_ids, "out->input_ids");
    require(out->token_type_ids, "out->token_type_ids");
    require(out->token_mask, "out->token_mask");
    require(out->regions, "out->regions");
    require(out->region_mask, "out->region_mask");
    if (text_length > 0) require(text, "text");
    const minivlm::Tokenizer& t = tokenizer->tokenizer;
    const std::string_view text_view(text_length ? text : "", text_length);
    const std::vector<int64_t> text_ids = t.encode(text_view);
    if (require_text && text_ids.empty()) {
      fail(MVLM_BAD_INPUT, "text '" + std::string(text_view) + "' has no tokens; a question or caption is required");
    }
    if (text_ids.size() > static_cast<size_t>(c.max_text_len - 2)) {
      fail(MVLM_BAD_INPUT, "text is " + str(text_ids.size()) + " tokens, the model takes at most " +
                               str(c.max_text_len - 2) + " (max_text_len " + str(c.max_text_len) +
                               " minus [CLS] and [SEP])");
    }
    // Whole tags in the given order while they fit: half a tag would state what the detector did not say.
    if (num_tags > 0) require(tags, "tags");
    std::vector<int64_t> tag_ids;
    const size_t budget = static_cast<size_t>(c.max_tags_len - 1);
    for (size_t i = 0; i < num_tags; ++i) {
      if (tags[i] == nullptr) fail(MVLM_INVALID_ARGUMENT, "tags[" + str(i) + "] is NULL");
      const std::vector<int64_t> ids = t.encode(tags[i]);
      if (tag_ids.size() + ids.size() > budget) break;
      tag_ids.insert(tag_ids.end(), ids.begin(), ids.end());
    }
    const int64_t special_max = std::max(t.cls_id(), std::max(t.sep_id(), t.pad_id()));
    if (special_max >= c.vocab_size || t.vocab_size() > c.vocab_size) {
      fail(MVLM_INVALID_ARGUMENT, "tokenizer has " + str(t.vocab_size()) + " tokens, the model only " + str(c.vocab_size));
    }
    if (num_regions > static_cast<size_t>(c.max_regions)) {
      fail(MVLM_BAD_INPUT, "got " + str(num_regions) + " regions, the model takes at most " + str(c.max_regions));
    }
    const size_t rd = static_cast<size_t>(c.region_dim);
    if (num_regions > 0) require(region_tokens, "region_tokens");
    for (size_t i = 0; i < num_regions * rd; ++i) {
      if (!std::isfinite(region_tokens[i])) {
        fail(MVLM_BAD_INPUT, "region_tokens[" + str(i / rd) + "][" + str(i % rd) + "] is not finite");
      }
    }
    const size_t text_len = static_cast<size_t>(c.max_text_len), total = static_cast<size_t>(c.max_text_tags_len);
    std::vector<int64_t> ids(total, t.pad_id()), types(total, 0);
    std::vector<float> mask(total, 0.0f);
    ids[0] = t.cls_id();
    std::copy(text_ids.begin(), text_ids.end(), ids.begin() + 1);
    ids[1 + text_ids.size()] = t.sep_id();
    std::fill(mask.begin(), mask.begin() + static_cast<std::ptrdiff_t>(text_ids.size() + 2), 1.0f);
    std::copy(tag_ids.begin(), tag_ids.end(), ids.begin() + static_cast<std::ptrdiff_t>(text_len));
    ids[text_len + tag_ids.size()] = t.sep_id();
    for (size_t i = text_len; i <= text_len + tag_ids.size(); ++i) {
      types[i] = 1;
      mask[i] = 1.0f;
    }
    std::memcpy(out->input_ids, ids.data(), total * sizeof(int64_t));
    std::memcpy(out->token_type_ids, types.data(), total * sizeof(int64_t));
    std::memcpy(out->token_mask, mask.data(), total * sizeof(float));
    const size_t r = static_cast<size_t>(c.max_regions);
    std::memset(out->regions, 0, r * rd * sizeof(float));
    if (num_regions > 0) std::memcpy(out->regions, region_tokens, num_regions * rd * sizeof(float));
    for (size_t i = 0; i < r; ++i) out->region_mask[i] = i < num_regions ? 1.0f : 0.0f;
  });
}

}  // extern "C"
