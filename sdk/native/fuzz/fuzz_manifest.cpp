// libFuzzer target: manifest.json from memory. A malformed or inconsistent manifest is MVLM_BAD_FILE naming
// what is wrong; an accepted one yields a config that passes mvlm_config_check, and its file lookups either
// succeed with a name inside the build folder or fail cleanly (the folder does not exist: reads are IO errors).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "minivlm/minivlm.h"

static const char kFolder[] = "/nonexistent-minivlm-fuzz";

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mvlm_manifest* m = nullptr;
  const mvlm_status s = mvlm_manifest_parse(reinterpret_cast<const char*>(data), size, kFolder, &m);
  if (s != MVLM_OK) {
    if (s != MVLM_BAD_FILE || m != nullptr || mvlm_last_error()[0] == '\0') abort();
    return 0;
  }
  mvlm_config c;
  if (mvlm_manifest_config(m, &c) != MVLM_OK || mvlm_config_check(&c) != MVLM_OK) abort();
  if (mvlm_manifest_json(m) == nullptr) abort();
  for (const char* which : {"vocab", "vocabularies", "tee_stage1", "caption_step", "no such graph"}) {
    char path[4096];
    size_t length = 0;
    const mvlm_status f = mvlm_manifest_file(m, which, path, sizeof path, &length);
    if (f == MVLM_OK && std::string(path, length).rfind(std::string(kFolder) + "/", 0) != 0) abort();
    if (f != MVLM_OK && f != MVLM_BAD_FILE && f != MVLM_INVALID_ARGUMENT && f != MVLM_BUFFER_TOO_SMALL) abort();
  }
  int32_t classes = 0;
  const mvlm_status f = mvlm_manifest_num_classes(m, &classes);
  if (f != MVLM_IO_ERROR && f != MVLM_BAD_FILE) abort();
  mvlm_manifest_free(m);
  return 0;
}
