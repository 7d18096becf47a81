// SHA-256 (FIPS 180-4), streaming: the checksums manifest.json records for every file of a build.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace minivlm {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  // The digest as 64 lowercase hex digits; the object must not be updated afterwards.
  std::string hex();

 private:
  void block(const unsigned char* p);
  uint32_t h_[8];
  unsigned char buffer_[64];
  size_t buffered_ = 0;
  uint64_t total_ = 0;  // bytes
};

// The sha256 of a whole file, read in chunks; MVLM_IO_ERROR naming `path` if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace minivlm
