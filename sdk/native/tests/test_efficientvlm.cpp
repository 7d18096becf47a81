// EfficientVLM host steps against python_ref (tests/golden_efficientvlm, written by
// sdk/native/tools/make_efficientvlm_goldens.py): Pillow-exact bicubic resize and normalisation (also from
// RGBA/BGR pixels with padded rows), text and prompt packing, and the greedy caption decode over a callback that
// replays every recorded caption_step call and checks the inputs the core hands it. Then bad input.
//
//   test_efficientvlm GOLDEN_FOLDER     (a folder with manifest.json, vocab.txt and golden/index.json)
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "check.hpp"
#include "golden.hpp"

namespace {

using golden::Folder;

// Pixels in another layout: RGBA/BGR8 with `pad` extra bytes per row.
std::vector<uint8_t> repack(const std::vector<uint8_t>& rgb, int32_t width, int32_t height, int32_t format, size_t pad,
                            size_t* row_bytes) {
  const size_t channels = (format == MVLM_PIXELS_RGBA8 || format == MVLM_PIXELS_BGRA8) ? 4 : 3;
  const bool bgr = format == MVLM_PIXELS_BGRA8 || format == MVLM_PIXELS_BGR8;
  *row_bytes = static_cast<size_t>(width) * channels + pad;
  std::vector<uint8_t> out(*row_bytes * static_cast<size_t>(height), 77);
  for (size_t y = 0; y < static_cast<size_t>(height); ++y) {
    for (size_t x = 0; x < static_cast<size_t>(width); ++x) {
      const uint8_t* p = &rgb[(y * static_cast<size_t>(width) + x) * 3];
      uint8_t* q = &out[y * *row_bytes + x * channels];
      q[0] = bgr ? p[2] : p[0];
      q[1] = p[1];
      q[2] = bgr ? p[0] : p[2];
      if (channels == 4) q[3] = 200;
    }
  }
  return out;
}

void check_resize(check::Suite& s, const mvlm_evlm_config& config, const std::vector<uint8_t>& image, int32_t width,
                  int32_t height, const std::vector<uint8_t>& resized, const std::vector<float>& pixels,
                  const std::string& what) {
  const size_t n = static_cast<size_t>(config.image_size) * static_cast<size_t>(config.image_size);
  const struct { int32_t format; size_t pad; const char* name; } layouts[] = {
      {MVLM_PIXELS_RGB8, 0, "RGB"}, {MVLM_PIXELS_RGBA8, 12, "RGBA+12"}, {MVLM_PIXELS_BGR8, 5, "BGR+5"},
      {MVLM_PIXELS_BGRA8, 0, "BGRA"}};
  for (const auto& layout : layouts) {
    size_t row_bytes = 0;
    const std::vector<uint8_t> src = repack(image, width, height, layout.format, layout.pad, &row_bytes);
    std::vector<uint8_t> got(3 * n);
    s.status(mvlm_evlm_resize(config.image_size, src.data(), width, height, row_bytes, layout.format, got.data(), got.size()),
             what + " resize " + layout.name);
    s.equal(got, resized, what + " resize " + layout.name + " (Pillow bicubic, exact)");
    std::vector<float> out(3 * n);
    s.status(mvlm_evlm_preprocess(&config, src.data(), width, height, row_bytes, layout.format, out.data(), out.size()),
             what + " preprocess " + layout.name);
    s.close(out.data(), pixels.data(), out.size(), check::kFloatTol, what + " preprocess " + layout.name);
  }
}

struct Replay {
  check::Suite* suite;
  const Folder* folder;
  std::string calls;  // JSON pointer of the image's caption_step calls
  size_t count = 0, made = 0;
  int32_t vocab = 0;
};

int32_t replay_step(void* user_data, const mvlm_evlm_step_request* request) {
  Replay& r = *static_cast<Replay*>(user_data);
  check::Suite& s = *r.suite;
  if (!s.ok(r.made < r.count, "caption_step called more often than python_ref called it (" + std::to_string(r.count) + ")")) {
    return 1;
  }
  const std::string call = r.calls + "/" + std::to_string(r.made++);
  const std::vector<int64_t> ids = r.folder->array(call + "/inputs/input_ids").ints();
  const std::vector<float> mask = r.folder->array(call + "/inputs/token_mask").floats();
  const std::vector<int64_t> got_ids(request->input_ids, request->input_ids + ids.size());
  const std::vector<float> got_mask(request->token_mask, request->token_mask + mask.size());
  s.equal(got_ids, ids, call + " input_ids");
  s.equal(got_mask, mask, call + " token_mask");
  const std::vector<float> logits = r.folder->array(call + "/outputs/token_logits").floats();
  std::memcpy(request->token_logits, logits.data(), logits.size() * sizeof(float));
  return 0;
}

// A step that always predicts `token` (or writes `bad` into row t-1), for the paths the goldens do not take.
struct Synthetic {
  int32_t vocab, length;
  int64_t token;
  float bad = 0.0f;
  bool poison = false;
  int32_t calls = 0;
};

int32_t synthetic_step(void* user_data, const mvlm_evlm_step_request* request) {
  Synthetic& y = *static_cast<Synthetic*>(user_data);
  ++y.calls;
  for (int32_t i = 0; i < y.length * y.vocab; ++i) request->token_logits[i] = 0.0f;
  float* row = request->token_logits + static_cast<size_t>(request->step - 1) * static_cast<size_t>(y.vocab);
  row[y.token] = 1.0f;
  row[y.vocab - 1] = 1.0f;  // a tie with a later index: the first maximum wins
  if (y.poison) row[2] = y.bad;
  return 0;
}

int32_t failing_step(void*, const mvlm_evlm_step_request*) { return 7; }

void run(check::Suite& s, const std::string& dir) {
  const Folder g(dir + "/golden");
  mvlm_evlm_config config{};
  s.status(mvlm_evlm_config_load(dir.c_str(), &config), "mvlm_evlm_config_load");
  golden::TokenizerPtr tok = golden::load_tokenizer(dir + "/vocab.txt");
  // The config against what the recorded graphs saw (independent of the manifest fields it was read from).
  const std::string first = g.key_at("/cases", 0);
  const golden::Array tokens = g.array("/cases/" + first + "/graphs/vision/0/outputs/image_tokens");
  const golden::Array feature = g.array("/cases/" + first + "/graphs/vision/0/outputs/image_feature");
  const golden::Array step_logits = g.array("/cases/" + first + "/graphs/caption_step/0/outputs/token_logits");
  const golden::Array answers = g.array("/cases/" + first + "/graphs/vqa/0/outputs/answer_logits");
  s.ok(tokens.shape == std::vector<int64_t>{1, config.num_image_tokens, config.vision_width}, "config image token shape");
  s.ok(feature.shape == std::vector<int64_t>{1, config.embed_dim}, "config embed_dim");
  s.ok(step_logits.shape == std::vector<int64_t>{1, config.max_text_len, config.vocab_size}, "config text length, vocabulary");
  s.ok(answers.shape == std::vector<int64_t>{1, config.num_answers}, "config num_answers");

  // Preprocessing cases: other square sizes, the model's mean/std.
  for (size_t i = 0, n = g.size("/preprocess_cases"); i < n; ++i) {
    const std::string p = "/preprocess_cases/" + std::to_string(i);
    const golden::Array image = g.array(p + "/image");
    mvlm_evlm_config sized = config;
    sized.image_size = static_cast<int32_t>(g.integer(p + "/size"));
    check_resize(s, sized, image.u8(), static_cast<int32_t>(image.shape[1]), static_cast<int32_t>(image.shape[0]),
                 g.array(p + "/resized").u8(), g.array(p + "/pixels").floats(), "preprocess case " + std::to_string(i));
  }

  for (size_t c = 0, n = g.size("/cases"); c < n; ++c) {
    const std::string name = g.key_at("/cases", c), base = "/cases/" + golden::key(name);
    const std::string host = base + "/host_steps";
    const golden::Array image = g.array(host + "/preprocess/inputs/image");
    const std::vector<float> pixels = g.array(host + "/preprocess/outputs/pixels").floats();
    check_resize(s, config, image.u8(), static_cast<int32_t>(image.shape[1]), static_cast<int32_t>(image.shape[0]),
                 g.array(host + "/preprocess/outputs/resized").u8(), pixels, name);
    const std::vector<float> vision_input = g.array(base + "/graphs/vision/0/inputs/images").floats();
    s.close(pixels.data(), vision_input.data(), pixels.size(), 0.0, name + " recorded preprocess = the vision graph's input");

    const size_t T = static_cast<size_t>(config.max_text_len);
    std::vector<int64_t> ids(T);
    std::vector<float> mask(T);
    int32_t prompt_length = 0;
    s.status(mvlm_evlm_caption_prompt(tok.get(), &config, ids.data(), mask.data(), &prompt_length), name + " caption prompt");
    s.equal(ids, g.array(host + "/caption_packing/outputs/input_ids").ints(), name + " caption prompt input_ids");
    s.equal(mask, g.array(host + "/caption_packing/outputs/token_mask").floats(), name + " caption prompt token_mask");
    s.ok(prompt_length == 4, name + " prompt is [CLS] a picture of (4 tokens), got " + std::to_string(prompt_length));
    const struct { const char* step; const char* input; } packs[] = {{"question_packing", "question"}, {"text_packing", "text"}};
    for (const auto& pk : packs) {
      const std::string text = g.string(host + "/" + pk.step + "/inputs/" + pk.input + "/value");
      s.status(mvlm_evlm_pack_text(tok.get(), &config, text.data(), text.size(), ids.data(), mask.data()), name + " " + pk.step);
      s.equal(ids, g.array(host + "/" + pk.step + "/outputs/input_ids").ints(), name + " " + pk.step + " input_ids");
      s.equal(mask, g.array(host + "/" + pk.step + "/outputs/token_mask").floats(), name + " " + pk.step + " token_mask");
    }

    Replay replay{&s, &g, base + "/graphs/caption_step", g.size(base + "/graphs/caption_step"), 0, config.vocab_size};
    mvlm_evlm_caption caption{};
    s.status(mvlm_evlm_caption_decode(tok.get(), &config, replay_step, &replay, &caption), name + " caption decode");
    const std::vector<int64_t> got(caption.token_ids, caption.token_ids + caption.num_tokens);
    s.equal(got, g.array(host + "/greedy_caption/outputs/token_ids").ints(), name + " caption tokens");
    s.ok((caption.finished != 0) == g.boolean(host + "/greedy_caption/outputs/finished/value"), name + " caption finished flag");
    s.ok(replay.made == replay.count, name + " caption_step calls: " + std::to_string(replay.made) + " of " + std::to_string(replay.count));
    s.ok(golden::detokenize(tok.get(), got) == g.string(host + "/greedy_caption/outputs/caption/value"), name + " caption text");
  }

  // The paths the goldens do not take: max_text_len reached, ties, bad logits, a failing callback.
  Synthetic y{config.vocab_size, config.max_text_len, 9};
  mvlm_evlm_caption caption{};
  s.status(mvlm_evlm_caption_decode(tok.get(), &config, synthetic_step, &y, &caption), "decode to max_text_len");
  s.ok(caption.finished == 0 && caption.num_tokens == config.max_text_len - 4 && y.calls == caption.num_tokens &&
           caption.token_ids[0] == 9 && caption.token_ids[caption.num_tokens - 1] == 9,
       "a caption without [SEP] stops at max_text_len (" + std::to_string(caption.num_tokens) + " tokens)");
  Synthetic stop{config.vocab_size, config.max_text_len, config.sep_id};
  s.status(mvlm_evlm_caption_decode(tok.get(), &config, synthetic_step, &stop, &caption), "decode to [SEP]");
  s.ok(caption.finished == 1 && caption.num_tokens == 0 && stop.calls == 1, "[SEP] first: an empty, finished caption");
  Synthetic nan{config.vocab_size, config.max_text_len, 9, std::nanf(""), true};
  s.ok(mvlm_evlm_caption_decode(tok.get(), &config, synthetic_step, &nan, &caption) == MVLM_BAD_INPUT &&
           std::strstr(mvlm_last_error(), "is not finite") != nullptr, std::string("NaN logits: ") + mvlm_last_error());
  s.ok(mvlm_evlm_caption_decode(tok.get(), &config, failing_step, nullptr, &caption) == MVLM_CALLBACK_FAILED,
       std::string("failing callback: ") + mvlm_last_error());
  s.ok(mvlm_evlm_caption_decode(tok.get(), &config, nullptr, nullptr, &caption) == MVLM_INVALID_ARGUMENT, "NULL step");

  // Bad text, images, configs and manifests: an error with a one-line message, never a crash.
  const size_t T = static_cast<size_t>(config.max_text_len);
  std::vector<int64_t> ids(T);
  std::vector<float> mask(T);
  std::string long_text;
  for (int i = 0; i < config.max_text_len; ++i) long_text += "red ";
  const struct { std::string text; const char* expect; } bad_texts[] = {
      {"", "expected a non-empty string"}, {"   \t ", "expected a non-empty string"}, {long_text, "the model takes at most"}};
  for (const auto& b : bad_texts) {
    const mvlm_status st = mvlm_evlm_pack_text(tok.get(), &config, b.text.data(), b.text.size(), ids.data(), mask.data());
    const std::string error = mvlm_last_error();
    s.ok(st == MVLM_BAD_INPUT && error.find(b.expect) != std::string::npos && error.find('\n') == std::string::npos,
         "bad text gives one line: " + error);
  }
  std::vector<float> out(3 * static_cast<size_t>(config.image_size * config.image_size));
  const uint8_t px[12] = {0};
  s.ok(mvlm_evlm_preprocess(&config, px, 0, 1, 3, MVLM_PIXELS_RGB8, out.data(), out.size()) == MVLM_BAD_INPUT, "0-wide image");
  s.ok(mvlm_evlm_preprocess(&config, px, 2, 1, 5, MVLM_PIXELS_RGB8, out.data(), out.size()) == MVLM_INVALID_ARGUMENT, "short rows");
  s.ok(mvlm_evlm_preprocess(&config, px, 1, 1, 3, 9, out.data(), out.size()) == MVLM_INVALID_ARGUMENT, "bad pixel format");
  s.ok(mvlm_evlm_preprocess(&config, px, 1, 1, 3, MVLM_PIXELS_RGB8, out.data(), 5) == MVLM_INVALID_ARGUMENT, "short out");
  s.ok(mvlm_evlm_preprocess(&config, nullptr, 1, 1, 3, MVLM_PIXELS_RGB8, out.data(), out.size()) == MVLM_INVALID_ARGUMENT, "NULL pixels");
  mvlm_evlm_config broken = config;
  broken.pixel_std[1] = 0.0;
  s.ok(mvlm_evlm_config_check(&broken) == MVLM_INVALID_ARGUMENT, std::string("std 0: ") + mvlm_last_error());
  broken = config;
  broken.sep_id = config.vocab_size;
  s.ok(mvlm_evlm_config_check(&broken) == MVLM_INVALID_ARGUMENT, std::string("[SEP] outside the vocabulary: ") + mvlm_last_error());
  const std::string manifest = golden::read(dir + "/manifest.json");
  mvlm_evlm_config parsed{};
  s.status(mvlm_evlm_config_parse(manifest.data(), manifest.size(), &parsed), "config from memory");
  s.ok(std::memcmp(&parsed, &config, sizeof config) == 0, "config from memory = config from the file");
  const struct { std::string text; const char* expect; } bad_manifests[] = {
      {"{\"family\": \"minivlm\"}", "/family is 'minivlm', expected 'efficientvlm'"},
      {"{}", "lacks /family"},
      {"{\"family\": \"efficientvlm\", \"model\": {\"config\": {}}}", "lacks /model/config/vision/image_size"},
      {manifest.substr(0, manifest.size() / 2), ""}};
  for (const auto& b : bad_manifests) {
    const mvlm_status st = mvlm_evlm_config_parse(b.text.data(), b.text.size(), &parsed);
    const std::string error = mvlm_last_error();
    s.ok(st == MVLM_BAD_FILE && error.find(b.expect) != std::string::npos && error.find('\n') == std::string::npos,
         "bad manifest gives one line: " + error);
  }
  s.ok(mvlm_evlm_config_load((dir + "/no-such-folder").c_str(), &parsed) == MVLM_IO_ERROR, "missing manifest");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s GOLDEN_FOLDER\n", argv[0]);
    return 2;
  }
  check::Suite suite("efficientvlm");
  return suite.run([&](check::Suite& s) { run(s, argv[1]); });
}
