// The WordPiece tokenizer against python_ref on every golden string (index.json "tokenizer": text, ids, decoded):
// accents, CJK, Hangul, emoji, typed specials, a 112-character word, whitespace runs, the empty string.
// Usage: test_tokenizer GOLDEN_DIR VOCAB_TXT
#include <cstdio>

#include "check.hpp"
#include "golden.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s GOLDEN_DIR VOCAB_TXT\n", argv[0]);
    return 2;
  }
  check::Suite suite("tokenizer");
  return suite.run([&](check::Suite& s) {
    const golden::Folder g(argv[1]);
    const golden::TokenizerPtr tok = golden::load_tokenizer(argv[2]);
    int32_t vocab = 0;
    s.status(mvlm_tokenizer_vocab_size(tok.get(), &vocab), "vocab_size");
    s.ok(vocab > 0, "vocab has tokens");
    const size_t cases = g.size("/tokenizer");
    s.ok(cases >= 9, "at least the 9 TOKENIZER_CASES");
    for (size_t i = 0; i < cases; ++i) {
      const std::string p = "/tokenizer/" + std::to_string(i);
      const std::string text = g.string(p + "/text");
      const std::vector<int64_t> expected = g.ints(p + "/ids");
      const std::string label = "case " + std::to_string(i) + " '" + text.substr(0, 40) + "'";
      size_t count = 0;
      // First call with no buffer: the count is reported (BUFFER_TOO_SMALL unless there are no ids).
      const mvlm_status probe = mvlm_tokenize(tok.get(), text.data(), text.size(), nullptr, 0, &count);
      s.ok(probe == (expected.empty() ? MVLM_OK : MVLM_BUFFER_TOO_SMALL), label + ": size probe status");
      s.ok(count == expected.size(), label + ": size probe reports " + std::to_string(count) + " ids, python_ref has " +
                                         std::to_string(expected.size()));
      std::vector<int64_t> ids(count + 1);
      s.status(mvlm_tokenize(tok.get(), text.data(), text.size(), ids.data(), ids.size(), &count), label);
      ids.resize(count);
      s.equal(ids, expected, label + ": ids");
      s.ok(golden::detokenize(tok.get(), expected) == g.string(p + "/decoded"),
           label + ": decoded '" + golden::detokenize(tok.get(), expected) + "', python_ref '" + g.string(p + "/decoded") + "'");
    }
    // Every caption the goldens hold decodes to python_ref's text.
    for (size_t c = 0, n = g.size("/cases"); c < n; ++c) {
      const std::string p = "/cases/" + golden::key(g.key_at("/cases", c)) + "/host_steps/greedy_caption/outputs";
      const golden::Array tokens = g.array(p + "/token_ids");
      const std::string want = g.string(p + "/caption/value");
      s.ok(golden::detokenize(tok.get(), tokens.ints()) == want, "caption '" + want + "' decodes as python_ref");
    }
  });
}
