// libFuzzer target: vocab.txt parsing (any bytes), then tokenizing a few fixed texts with whatever vocabulary
// was accepted and decoding every id. A malformed vocabulary is MVLM_BAD_FILE with a message, never a crash.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "minivlm/minivlm.h"

static const char* const kTexts[] = {
    "how many shapes are there?", "Naïve café, résumé — déjà vu.", "北京 and 서울 ﬁne", "un##believable [SEP] x",
    "e\xcc\x81 \xf0\x9f\x99\x82 tabs\tand\nnewlines"};

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mvlm_tokenizer* t = nullptr;
  const mvlm_status s = mvlm_tokenizer_parse(reinterpret_cast<const char*>(data), size, &t);
  if (s != MVLM_OK) {
    if (s != MVLM_BAD_FILE || t != nullptr || mvlm_last_error()[0] == '\0') abort();
    return 0;
  }
  int32_t vocab = 0;
  int64_t specials[5];
  if (mvlm_tokenizer_vocab_size(t, &vocab) != MVLM_OK || mvlm_tokenizer_special_ids(t, specials) != MVLM_OK) abort();
  for (const char* text : kTexts) {
    int64_t ids[256];
    size_t count = 0;
    if (mvlm_tokenize(t, text, strlen(text), ids, 256, &count) != MVLM_OK) abort();
    for (size_t i = 0; i < count; ++i) {
      if (ids[i] < 0 || ids[i] >= vocab) abort();
    }
    char buffer[4096];
    size_t length = 0;
    if (mvlm_detokenize(t, ids, count, buffer, sizeof buffer, &length) != MVLM_OK) abort();
  }
  char token[4096];
  size_t length = 0;
  for (int64_t id = 0; id < vocab && id < 64; ++id) {
    const mvlm_status st = mvlm_token_text(t, id, token, sizeof token, &length);
    if (st != MVLM_OK && st != MVLM_BUFFER_TOO_SMALL) abort();
  }
  if (mvlm_token_text(t, vocab, token, sizeof token, &length) != MVLM_INVALID_ARGUMENT) abort();
  mvlm_tokenizer_free(t);
  return 0;
}
