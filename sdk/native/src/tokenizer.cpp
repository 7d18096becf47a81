#include "tokenizer.hpp"

#include "common.hpp"
#include "unicode.hpp"

namespace minivlm {
namespace {

const char* const kSpecials[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};

std::string quoted(std::string_view s) {  // a token in an error message, like Python's repr
  std::string out = "'";
  for (char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c == '\'') out += "\\'";
    else out.push_back(c);
  }
  return out + "'";
}

// BertNormalizer (clean_text, handle_chinese_chars, strip_accents, lowercase), in tokenizers' order.
std::u32string normalize(const std::u32string& text) {
  std::u32string cleaned;
  cleaned.reserve(text.size());
  for (char32_t c : text) {
    const uint8_t f = unicode::flags(c);
    if (f & unicode::kRemove) continue;
    if (f & unicode::kCleanSpace) {
      cleaned.push_back(U' ');
    } else if (f & unicode::kCjk) {
      cleaned.push_back(U' ');
      cleaned.push_back(c);
      cleaned.push_back(U' ');
    } else {
      cleaned.push_back(c);
    }
  }
  std::u32string decomposed;
  decomposed.reserve(cleaned.size());
  for (char32_t c : cleaned) unicode::append_nfd(c, decomposed);
  unicode::canonical_order(decomposed);
  std::u32string out;
  out.reserve(decomposed.size());
  for (char32_t c : decomposed) {
    if (!(unicode::flags(c) & unicode::kNonspacing)) unicode::append_lower(c, out);
  }
  return out;
}

}  // namespace

Tokenizer Tokenizer::parse(std::string_view raw, const std::string& what) {
  std::u32string decoded;
  size_t bad = 0;
  if (!unicode::decode_utf8(raw, decoded, bad)) {
    fail(MVLM_BAD_FILE, "vocab file " + what + " is not UTF-8 (byte " + str(bad) + ")");
  }
  // Python reads text files with universal newlines: "\r\n" and "\r" end a line too.
  std::string normalized;
  normalized.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\r') {
      normalized.push_back('\n');
      if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
    } else {
      normalized.push_back(raw[i]);
    }
  }
  const std::string_view text = normalized;
  Tokenizer t;
  std::vector<std::string_view> lines;
  size_t start = 0;
  for (;;) {
    const size_t end = text.find('\n', start);
    if (end == std::string_view::npos) {
      lines.push_back(text.substr(start));
      break;
    }
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  if (!lines.empty() && lines.back().empty()) lines.pop_back();  // the trailing newline of the last token
  if (lines.empty()) fail(MVLM_BAD_FILE, "vocab file " + what + " is empty");
  t.tokens_.reserve(lines.size());
  t.ids_.reserve(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string_view token = lines[i];
    std::u32string chars;
    unicode::decode_utf8(token, chars, bad);  // valid: the whole text is
    bool spaced = false;
    for (char32_t c : chars) spaced = spaced || unicode::python_space(c);
    if (token.empty() || spaced) {
      fail(MVLM_BAD_FILE, "vocab file " + what + " line " + str(i + 1) + " is malformed: " + quoted(token) +
                              " (one token per line, no spaces)");
    }
    const auto [it, inserted] = t.ids_.emplace(std::string(token), static_cast<int64_t>(i));
    if (!inserted) {
      fail(MVLM_BAD_FILE, "vocab file " + what + " line " + str(i + 1) + " repeats token " + quoted(token) +
                              " (first on line " + str(it->second + 1) + ")");
    }
    t.tokens_.emplace_back(token);
  }
  std::string missing;
  for (int k = 0; k < 5; ++k) {
    const auto it = t.ids_.find(kSpecials[k]);
    if (it == t.ids_.end()) {
      missing += (missing.empty() ? "" : ", ") + std::string(kSpecials[k]);
    } else {
      t.specials_[k] = it->second;
    }
  }
  if (!missing.empty()) fail(MVLM_BAD_FILE, "vocab file " + what + " lacks the special tokens " + missing);
  return t;
}

std::vector<std::u32string> Tokenizer::words(std::string_view utf8) const {
  std::u32string text;
  size_t bad = 0;
  if (!unicode::decode_utf8(utf8, text, bad)) {
    fail(MVLM_BAD_INPUT, "text is not valid UTF-8 (byte " + str(bad) + " of " + str(utf8.size()) + ")");
  }
  // BertPreTokenizer: split on whitespace (dropped) and on punctuation (kept as one-character words).
  std::vector<std::u32string> words;
  std::u32string word;
  for (char32_t c : normalize(text)) {
    const uint8_t f = unicode::flags(c);
    if (f & (unicode::kPreSpace | unicode::kPunctuation)) {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
      if (f & unicode::kPunctuation) words.emplace_back(1, c);
    } else {
      word.push_back(c);
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

void Tokenizer::wordpiece(const std::u32string& word, std::vector<int64_t>& out) const {
  if (word.size() > kMaxInputCharsPerWord) {
    out.push_back(unk_id());
    return;
  }
  // Greedy longest match first; one unmatched piece makes the whole word [UNK].
  std::vector<int64_t> pieces;
  size_t start = 0;
  while (start < word.size()) {
    size_t end = word.size();
    int64_t found = -1;
    while (start < end) {
      std::string piece = start > 0 ? "##" : "";
      for (size_t k = start; k < end; ++k) unicode::append_utf8(word[k], piece);
      const auto it = ids_.find(piece);
      if (it != ids_.end()) {
        found = it->second;
        break;
      }
      --end;
    }
    if (found < 0) {
      out.push_back(unk_id());
      return;
    }
    pieces.push_back(found);
    start = end;
  }
  out.insert(out.end(), pieces.begin(), pieces.end());
}

std::vector<int64_t> Tokenizer::encode(std::string_view utf8) const {
  std::vector<int64_t> ids;
  for (const std::u32string& w : words(utf8)) wordpiece(w, ids);
  return ids;
}

std::vector<std::string> Tokenizer::tokens(std::string_view utf8) const {
  std::vector<std::string> out;
  for (int64_t id : encode(utf8)) out.push_back(tokens_[static_cast<size_t>(id)]);
  return out;
}

bool Tokenizer::is_special(int64_t id) const {
  for (int64_t s : specials_) {
    if (s == id) return true;
  }
  return false;
}

const std::string& Tokenizer::token(int64_t id) const {
  if (id < 0 || id >= static_cast<int64_t>(tokens_.size())) {
    fail(MVLM_INVALID_ARGUMENT, "token id " + str(id) + " is outside the vocabulary [0, " + str(tokens_.size()) + ")");
  }
  return tokens_[static_cast<size_t>(id)];
}

namespace {

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
}

}  // namespace

std::string Tokenizer::decode(const int64_t* ids, size_t count) const {
  for (size_t i = 0; i < count; ++i) token(ids[i]);  // range check first, as python_ref
  // HF decoders.WordPiece(prefix="##", cleanup=True): every token but the first loses "##" or gains a leading
  // space, then each token (not the joined text) goes through the cleanup replacements.
  std::string out;
  size_t position = 0;
  for (size_t i = 0; i < count; ++i) {
    if (is_special(ids[i])) continue;
    std::string t = tokens_[static_cast<size_t>(ids[i])];
    if (position != 0) {
      if (t.compare(0, 2, "##") == 0) {
        t.erase(0, 2);
      } else {
        t.insert(0, " ");
      }
    }
    replace_all(t, " .", ".");
    replace_all(t, " ?", "?");
    replace_all(t, " !", "!");
    replace_all(t, " ,", ",");
    replace_all(t, " ' ", "'");
    replace_all(t, " n't", "n't");
    replace_all(t, " 'm", "'m");
    replace_all(t, " do not", " don't");
    replace_all(t, " 's", "'s");
    replace_all(t, " 've", "'ve");
    replace_all(t, " 're", "'re");
    out += t;
    ++position;
  }
  return out;
}

}  // namespace minivlm
