// The EfficientVLM pipeline on an iPhone build (manifest "family": "efficientvlm"): the native core runs every
// host step (mvlm_evlm_*), a GraphRunner runs each of the five graphs. Mirrors
// python_ref/efficientvlm/pipeline.py `Pipeline` and android_demo's EfficientVlm.kt.
//
//   image -> preprocess (Pillow-exact bicubic to S x S, mean/std) -> vision -> image tokens + ITC feature
//   caption: caption_step loop (greedy decoding in the core) / answer: pack -> vqa / match: pack -> match

import CMiniVLM
import Foundation

/// What the vision graph makes of one image: its tokens (1, N, Dv) and its unit ITC feature (E,).
public struct EncodedImage {
    public let tokens: HostTensor
    public let feature: [Float]
}

public final class EfficientVLMPipeline {
    public let folder: URL
    public let spec: BuildSpec
    public let config: mvlm_evlm_config
    public let tokenizer: Tokenizer
    private let backend: GraphBackend
    private var runners: [String: GraphRunner] = [:]

    /// The build written by `minivlm-convert` in `folder` (an EfficientVLM one), its graphs run by `backend`.
    public convenience init(folder: URL, backend: @escaping GraphBackend) throws {
        try self.init(folder: folder, spec: try BuildSpec(folder: folder), backend: backend)
    }

    init(folder: URL, spec: BuildSpec, backend: @escaping GraphBackend) throws {
        guard spec.family == "efficientvlm" else {
            throw MiniVLMError(.config, "\(folder.path) is a \(spec.family) build; EfficientVLMPipeline runs efficientvlm builds (use Pipeline)")
        }
        guard !spec.vocabFile.hasPrefix("/"), !spec.vocabFile.split(separator: "/").contains("..") else {
            throw MiniVLMError(.badFile, "manifest tokenizer.vocab_file is '\(spec.vocabFile)', expected a file inside the build folder")
        }
        self.folder = folder
        self.spec = spec
        self.backend = backend
        var c = mvlm_evlm_config()
        try check(mvlm_evlm_config_load(folder.appendingPathComponent("manifest.json").path, &c))
        config = c
        tokenizer = try Tokenizer(vocab: folder.appendingPathComponent(spec.vocabFile))
        guard spec.answers.count == Int(c.num_answers) else {
            throw MiniVLMError(.config, "the vocabularies list \(spec.answers.count) answers, the model predicts \(c.num_answers)")
        }
    }

    /// Opens every graph now (model load), so the first image does not pay for it.
    public func loadGraphs() throws {
        for name in spec.graphOrder { _ = try runner(name) }
    }

    private func runner(_ name: String) throws -> GraphRunner {
        if let r = runners[name] { return r }
        let r = try backend(folder, name, try spec.graph(name))
        runners[name] = r
        return r
    }

    private func run(_ name: String, _ inputs: [String: HostTensor], _ timings: inout Timings) throws -> [String: HostTensor] {
        let r = try runner(name)
        try r.checkInputs(inputs)
        return try timings.measure(name) { try r.run(inputs) }
    }

    private static func floats(_ outputs: [String: HostTensor], _ name: String) throws -> [Float] {
        guard let t = outputs[name] else { throw MiniVLMError(.runtime, "the graph returned no output '\(name)'") }
        return try t.floats()
    }

    /// The vision graph's input for `image`: (1, 3, S, S) floats, resized as Pillow's bicubic and normalised.
    public func preprocess(_ image: PixelImage) throws -> [Float] {
        var c = config
        let s = Int(c.image_size)
        let pixels = CBuffer<Float>(3 * s * s)
        try withBytes(image.pixels) { bytes, length in
            guard length >= image.rowBytes * image.height else {
                throw MiniVLMError(.invalidArgument, "pixel data has \(length) bytes, \(image.height) rows of \(image.rowBytes) need more")
            }
            try bytes.withMemoryRebound(to: UInt8.self, capacity: max(length, 1)) { p in
                try check(mvlm_evlm_preprocess(&c, p, Int32(image.width), Int32(image.height), image.rowBytes, image.format,
                                               pixels.pointer, pixels.count))
            }
        }
        return pixels.array
    }

    /// Preprocess one image and run the vision graph.
    public func encode(_ image: PixelImage) throws -> (EncodedImage, Timings) {
        var timings = Timings()
        let s = Int(config.image_size)
        let pixels = try timings.measure("preprocess") { try preprocess(image) }
        let out = try run("vision", ["images": .float(values: pixels, shape: [1, 3, s, s])], &timings)
        guard let tokens = out["image_tokens"], tokens.dtype == .float32,
              tokens.shape == [1, Int(config.num_image_tokens), Int(config.vision_width)] else {
            throw MiniVLMError(.runtime, "vision output 'image_tokens' is \(out["image_tokens"].map { "\($0.dtype)\($0.shape)" } ?? "missing"), expected float32[1, \(config.num_image_tokens), \(config.vision_width)]")
        }
        let feature = try Self.floats(out, "image_feature")
        guard feature.count == Int(config.embed_dim) else {
            throw MiniVLMError(.runtime, "vision output 'image_feature' has \(feature.count) values, expected \(config.embed_dim)")
        }
        return (EncodedImage(tokens: tokens, feature: feature), timings)
    }

    /// `[CLS] text [SEP]` padded to max_text_len: the text inputs of text_feature, match and vqa.
    public func pack(_ text: String) throws -> [String: HostTensor] {
        var c = config
        let t = Int(c.max_text_len)
        let ids = CBuffer<Int64>(t), mask = CBuffer<Float>(t)
        try withBytes(Data(text.utf8)) { bytes, length in
            try check(mvlm_evlm_pack_text(tokenizer.handle, &c, bytes, length, ids.pointer, mask.pointer))
        }
        return ["input_ids": .int64(values: ids.array, shape: [1, t]), "token_mask": .float(values: mask.array, shape: [1, t])]
    }

    /// The greedy caption after the prompt "a picture of", decoded by the core over caption_step. Greedy decoding
    /// keeps no score: `score` is NaN.
    public func caption(_ image: EncodedImage) throws -> (Caption, Timings) {
        var timings = Timings()
        let context = EVLMStepContext(runner: try runner("caption_step"), tokens: image.tokens, config: config)
        var c = config
        var result = mvlm_evlm_caption()
        let start = DispatchTime.now().uptimeNanoseconds
        let status = mvlm_evlm_caption_decode(tokenizer.handle, &c, runEVLMCaptionStep,
                                              Unmanaged.passUnretained(context).toOpaque(), &result)
        if let error = context.error { throw error } // the graph's own error, not just "callback failed"
        try check(status)
        let total = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        timings.add("caption_step", context.stepMs)
        timings.add("decode (host)", total - context.stepMs)
        let tokenIds = withUnsafeBytes(of: &result.token_ids) { Array($0.bindMemory(to: Int64.self).prefix(Int(result.num_tokens))) }
        let text = try timings.measure("detokenize") { try tokenizer.decode(tokenIds) }
        return (Caption(text: text, tokenIds: tokenIds, score: .nan, finished: result.finished != 0), timings)
    }

    /// The most likely answer from the model's answer vocabulary.
    public func answer(_ image: EncodedImage, question: String) throws -> (String, Timings) {
        var timings = Timings()
        var inputs = try timings.measure("pack") { try pack(question) }
        inputs["image_tokens"] = image.tokens
        let logits = try Self.floats(try run("vqa", inputs, &timings), "answer_logits")
        // The first maximum, as torch.argmax.
        guard let best = logits.indices.max(by: { logits[$0] < logits[$1] || (logits[$0] == logits[$1] && $0 > $1) }),
              spec.answers.indices.contains(best) else {
            throw MiniVLMError(.config, "the answer logits do not match the answer vocabulary")
        }
        return (spec.answers[best], timings)
    }

    /// Probability that `text` describes the image (softmax of the ITM head, class 1).
    public func match(_ image: EncodedImage, text: String) throws -> (Float, Timings) {
        var timings = Timings()
        var inputs = try timings.measure("pack") { try pack(text) }
        inputs["image_tokens"] = image.tokens
        let logits = try Self.floats(try run("match", inputs, &timings), "match_logits")
        guard logits.count == 2 else { throw MiniVLMError(.config, "match_logits has \(logits.count) values, expected 2") }
        return (Float(1 / (1 + exp(Double(logits[0]) - Double(logits[1])))), timings)
    }

    /// The text's unit ITC feature (E,), for retrieval: its dot product with `EncodedImage.feature` ranks texts.
    public func textFeature(_ text: String) throws -> ([Float], Timings) {
        var timings = Timings()
        let inputs = try timings.measure("pack") { try pack(text) }
        return (try Self.floats(try run("text_feature", inputs, &timings), "text_feature"), timings)
    }
}

/// State of one EfficientVLM caption decode, reached from the C callback through `user_data`.
final class EVLMStepContext {
    let runner: GraphRunner
    let tokens: HostTensor
    let length: Int, vocab: Int
    var error: Error?
    var stepMs = 0.0

    init(runner: GraphRunner, tokens: HostTensor, config: mvlm_evlm_config) {
        self.runner = runner
        self.tokens = tokens
        length = Int(config.max_text_len)
        vocab = Int(config.vocab_size)
    }

    func run(_ r: mvlm_evlm_step_request) throws {
        guard let ids = r.input_ids, let mask = r.token_mask, let target = r.token_logits else {
            throw MiniVLMError(.internalError, "caption step request without its arrays")
        }
        let inputs: [String: HostTensor] = [
            "image_tokens": tokens,
            "input_ids": .int64(values: Array(UnsafeBufferPointer(start: ids, count: length)), shape: [1, length]),
            "token_mask": .float(values: Array(UnsafeBufferPointer(start: mask, count: length)), shape: [1, length]),
        ]
        try runner.checkInputs(inputs)
        let start = DispatchTime.now().uptimeNanoseconds
        let outputs = try runner.run(inputs)
        stepMs += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        guard let logits = try outputs["token_logits"]?.floats() else { throw MiniVLMError(.runtime, "caption_step returned no 'token_logits'") }
        guard logits.count == length * vocab else {
            throw MiniVLMError(.runtime, "caption_step 'token_logits' has \(logits.count) values, the decoder expects \(length * vocab)")
        }
        logits.withUnsafeBufferPointer { target.update(from: $0.baseAddress!, count: logits.count) }
    }
}

/// The C callback the core calls once per caption token.
private let runEVLMCaptionStep: mvlm_evlm_step_fn = { userData, request in
    guard let userData, let request else { return 1 }
    let context = Unmanaged<EVLMStepContext>.fromOpaque(userData).takeUnretainedValue()
    do {
        try context.run(request.pointee)
        return 0
    } catch {
        context.error = error
        return 1
    }
}
