// Reads UTF-8 lines on stdin and prints each line's token ids, space-separated, one line per input line; a line
// that fails prints "error <status>". Lines are split on '\n' only, so "\r" and other controls stay in the text.
// Usage: tokenize_lines VOCAB_TXT < lines
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "golden.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s VOCAB_TXT < lines\n", argv[0]);
    return 2;
  }
  try {
    const golden::TokenizerPtr tok = golden::load_tokenizer(argv[1]);
    std::string line;
    std::vector<int64_t> ids;
    while (std::getline(std::cin, line)) {
      size_t count = 0;
      mvlm_tokenize(tok.get(), line.data(), line.size(), nullptr, 0, &count);
      ids.resize(count + 1);
      const mvlm_status st = mvlm_tokenize(tok.get(), line.data(), line.size(), ids.data(), ids.size(), &count);
      if (st != MVLM_OK) {
        std::printf("error %s\n", mvlm_status_name(st));
        continue;
      }
      for (size_t i = 0; i < count; ++i) std::printf(i ? " %lld" : "%lld", static_cast<long long>(ids[i]));
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
