// libFuzzer target: WordPiece tokenization of arbitrary bytes with the bundled vocabulary, then decoding.
// Checks beyond "no crash": invalid UTF-8 is MVLM_BAD_INPUT and nothing else fails; the sizing call and the
// filling call agree; every id is inside the vocabulary; the decoded text is valid UTF-8 and tokenizes again.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "minivlm/minivlm.h"

static const mvlm_tokenizer* tokenizer() {
  static mvlm_tokenizer* t = [] {
    mvlm_tokenizer* out = nullptr;
    if (mvlm_tokenizer_load(MINIVLM_FUZZ_VOCAB, &out) != MVLM_OK) abort();
    return out;
  }();
  return t;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const mvlm_tokenizer* t = tokenizer();
  const char* text = reinterpret_cast<const char*>(data);
  size_t count = 0;
  mvlm_status s = mvlm_tokenize(t, text, size, nullptr, 0, &count);
  if (s == MVLM_BAD_INPUT) return 0;  // not UTF-8
  if (s != MVLM_OK && s != MVLM_BUFFER_TOO_SMALL) abort();
  std::vector<int64_t> ids(count);
  size_t filled = 0;
  if (mvlm_tokenize(t, text, size, ids.data(), ids.size(), &filled) != MVLM_OK || filled != count) abort();
  int32_t vocab = 0;
  mvlm_tokenizer_vocab_size(t, &vocab);
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab) abort();
  }
  size_t length = 0;
  s = mvlm_detokenize(t, ids.data(), ids.size(), nullptr, 0, &length);
  if (s != MVLM_OK && s != MVLM_BUFFER_TOO_SMALL) abort();
  std::string decoded(length + 1, '\0');
  if (mvlm_detokenize(t, ids.data(), ids.size(), &decoded[0], decoded.size(), &length) != MVLM_OK) abort();
  decoded.resize(length);
  if (mvlm_tokenize(t, decoded.data(), decoded.size(), nullptr, 0, &count) == MVLM_BAD_INPUT) abort();
  return 0;
}
