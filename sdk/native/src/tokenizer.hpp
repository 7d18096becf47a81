// BERT uncased WordPiece, identical to python_ref/tokenizer.py (HF `tokenizers`: BertNormalizer with clean_text,
// handle_chinese_chars, strip_accents and lowercase; BertPreTokenizer; WordPiece with "##", [UNK] and at most
// 100 characters per word; the WordPiece decoder with cleanup). Special-token strings in text are not matched.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace minivlm {

class Tokenizer {
 public:
  static constexpr size_t kMaxInputCharsPerWord = 100;

  // vocab.txt as python_ref `_read_vocab` reads it: UTF-8, one token per line, id = line number, no empty or
  // space-containing token, no repeats, the five specials present. `what` names the file in errors.
  static Tokenizer parse(std::string_view text, const std::string& what);

  std::vector<int64_t> encode(std::string_view utf8) const;
  // WordPiece tokens (strings) of `utf8`, for tests and debugging.
  std::vector<std::string> tokens(std::string_view utf8) const;
  // Text of `ids` without the specials; MVLM_INVALID_ARGUMENT for an id outside the vocabulary.
  std::string decode(const int64_t* ids, size_t count) const;
  const std::string& token(int64_t id) const;

  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  int64_t pad_id() const { return specials_[0]; }
  int64_t unk_id() const { return specials_[1]; }
  int64_t cls_id() const { return specials_[2]; }
  int64_t sep_id() const { return specials_[3]; }
  int64_t mask_id() const { return specials_[4]; }
  bool is_special(int64_t id) const;

  // The normalised words, before WordPiece (exposed for tests).
  std::vector<std::u32string> words(std::string_view utf8) const;

 private:
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int64_t> ids_;
  int64_t specials_[5] = {0, 0, 0, 0, 0};

  void wordpiece(const std::u32string& word, std::vector<int64_t>& out) const;
};

}  // namespace minivlm
