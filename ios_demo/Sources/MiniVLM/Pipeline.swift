// The MiniVLM pipeline on an iPhone build: the native core runs every host step, a GraphRunner runs each
// graph. Mirrors python_ref/pipeline.py `Pipeline` and android_demo's MiniVlm.kt.
//
//   preprocess -> tee_stage1 -> proposals -> tee_stage2 -> region selection -> region tokens
//   caption: pack -> caption_prefix -> caption_step loop (decoding, beams and K/V cache in the core)
//   answer / match: pack -> vqa / match

import CMiniVLM
import Foundation

/// Owned C memory of `count` elements, zero-filled (for the core's output arrays and mutable inputs).
final class CBuffer<T: Numeric> {
    let pointer: UnsafeMutablePointer<T>
    let count: Int

    init(_ count: Int) {
        self.count = count
        pointer = UnsafeMutablePointer<T>.allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }

    convenience init(_ values: [T]) {
        self.init(values.count)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { pointer.deallocate() }

    var array: [T] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
    func prefix(_ n: Int) -> [T] { Array(UnsafeBufferPointer(start: pointer, count: n)) }
}

/// Wall time per stage in milliseconds, in the order the stages ran.
public struct Timings: CustomStringConvertible {
    public private(set) var stages: [(name: String, ms: Double)] = []

    public init() {}

    public mutating func add(_ name: String, _ ms: Double) {
        if let i = stages.firstIndex(where: { $0.name == name }) { stages[i].ms += ms } else { stages.append((name, ms)) }
    }

    public mutating func measure<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
        let start = DispatchTime.now().uptimeNanoseconds
        defer { add(name, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6) }
        return try body()
    }

    public var totalMs: Double { stages.reduce(0) { $0 + $1.ms } }
    public var description: String { stages.map { "\($0.name) \(String(format: "%.1f", $0.ms)) ms" }.joined(separator: ", ") }
}

/// An 8-bit image in memory: `height` rows of `rowBytes` bytes; `format` is MVLM_PIXELS_*.
public struct PixelImage {
    public let pixels: Data
    public let width: Int
    public let height: Int
    public let rowBytes: Int
    public let format: Int32

    public init(pixels: Data, width: Int, height: Int, rowBytes: Int, format: Int32) {
        self.pixels = pixels
        self.width = width
        self.height = height
        self.rowBytes = rowBytes
        self.format = format
    }
}

public struct Detection: Identifiable {
    public let id: Int
    /// x1, y1, x2, y2 in original-image pixels.
    public let box: [Float]
    public let label: String
    public let score: Float
    public let attribute: String
}

/// What the detector hands the fusion model for one image.
public struct Analysis {
    public let letterbox: mvlm_letterbox
    public let tags: [String]           // class names in region order
    public let regionTokens: [Float]    // (K, region_dim)
    public let detections: [Detection]  // by descending score
    public let timings: Timings
}

public struct Caption {
    public let text: String
    public let tokenIds: [Int64]
    public let score: Double
    public let finished: Bool
}

/// The five packed fusion inputs (python_ref FusionInputs).
public struct FusionInputs {
    public let inputIds: [Int64], tokenTypeIds: [Int64], tokenMask: [Float], regions: [Float], regionMask: [Float]
}

public final class Pipeline {
    public let folder: URL
    public let spec: BuildSpec
    public let manifest: Manifest
    public let config: mvlm_config
    public let tokenizer: Tokenizer
    public let classNames: [String]
    private let anchors: [Float]
    private let backend: GraphBackend
    private var runners: [String: GraphRunner] = [:]

    /// The build written by `minivlm-convert` in `folder`, its graphs run by `backend`.
    public convenience init(folder: URL, backend: @escaping GraphBackend) throws {
        try self.init(folder: folder, spec: try BuildSpec(folder: folder), backend: backend, vocab: nil)
    }

    /// `spec` and `vocab` given explicitly (tests replaying host-only goldens); `vocab` nil: the build's own.
    init(folder: URL, spec: BuildSpec, backend: @escaping GraphBackend, vocab: URL?) throws {
        self.folder = folder
        self.backend = backend
        self.spec = spec
        manifest = try Manifest(contentsOf: folder.appendingPathComponent("manifest.json"))
        config = try manifest.config()
        tokenizer = try Tokenizer(vocab: try vocab ?? manifest.file("vocab"))
        classNames = try manifest.classNames()
        var c = config
        var status: mvlm_status = 0
        var n = 0
        guard let a = cmvlm_make_anchors(&c, &n, &status) else { throw MiniVLMError(status: status) }
        anchors = Array(UnsafeBufferPointer(start: a, count: 4 * n))
        cmvlm_free(a)
        if classNames.count != Int(config.num_classes) {
            throw MiniVLMError(.config, "the vocabularies list \(classNames.count) classes, the model predicts \(config.num_classes)")
        }
    }

    /// Loads every graph's runner now (they load on first use otherwise), so that opening a build pays for all
    /// of it and the first photo does not.
    public func loadGraphs() throws {
        for name in graphNames { _ = try runner(name) }
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

    // MARK: detection

    public func analyze(_ image: PixelImage) throws -> Analysis {
        var timings = Timings()
        var c = config
        let s = Int(c.image_size)
        let pixels = CBuffer<Float>(3 * s * s)
        var letterbox = mvlm_letterbox()
        try timings.measure("preprocess") {
            try withBytes(image.pixels) { bytes, length in
                guard length >= image.rowBytes * image.height else {
                    throw MiniVLMError(.invalidArgument, "pixel data has \(length) bytes, \(image.height) rows of \(image.rowBytes) need more")
                }
                try bytes.withMemoryRebound(to: UInt8.self, capacity: max(length, 1)) { p in
                    try check(mvlm_preprocess(&c, p, Int32(image.width), Int32(image.height), image.rowBytes, image.format,
                                              pixels.pointer, pixels.count, &letterbox))
                }
            }
        }
        let stage1 = try run("tee_stage1", ["images": .float(values: pixels.array, shape: [1, 3, s, s])], &timings)
        let k = Int(c.post_nms_top_n)
        let proposals = CBuffer<Float>(4 * k)
        let valid = CBuffer<UInt8>(k)
        let objectness = try Self.floats(stage1, "objectness"), deltas = try Self.floats(stage1, "deltas")
        guard objectness.count * 4 == anchors.count, deltas.count == anchors.count else {
            throw MiniVLMError(.runtime, "tee_stage1 gave \(objectness.count) scores for \(anchors.count / 4) anchors")
        }
        try timings.measure("proposals") {
            try check(mvlm_select_proposals(&c, objectness, deltas, anchors, anchors.count / 4, proposals.pointer, valid.pointer))
        }
        var stage2Inputs: [String: HostTensor] = [:]
        for input in try spec.graph("tee_stage2").inputs {
            if input.name == "boxes" {
                stage2Inputs["boxes"] = .float(values: proposals.array, shape: [1, k, 4])
            } else if let t = stage1[input.name] {
                stage2Inputs[input.name] = t
            } else {
                throw MiniVLMError(.config, "tee_stage2 input '\(input.name)' is not an output of tee_stage1")
            }
        }
        let stage2 = try run("tee_stage2", stage2Inputs, &timings)
        var analysis = try timings.measure("regions") { try regions(stage2, proposals, valid, letterbox) }
        analysis = Analysis(letterbox: analysis.letterbox, tags: analysis.tags, regionTokens: analysis.regionTokens,
                            detections: analysis.detections, timings: timings)
        return analysis
    }

    private func regions(_ stage2: [String: HostTensor], _ proposals: CBuffer<Float>, _ valid: CBuffer<UInt8>,
                         _ letterbox: mvlm_letterbox) throws -> Analysis {
        var c = config
        let m = Int(c.max_regions), r = valid.count, classes = Int(c.num_classes)
        let classLogits = try Self.floats(stage2, "class_logits"), boxDeltas = try Self.floats(stage2, "box_deltas")
        let features = try Self.floats(stage2, "region_features"), attributeLogits = try Self.floats(stage2, "attribute_logits")
        guard classLogits.count == r * classes, boxDeltas.count == r * classes * 4,
              features.count == r * Int(c.representation_size), attributeLogits.count == r * Int(c.num_attributes) else {
            throw MiniVLMError(.runtime, "tee_stage2 outputs do not match \(r) proposals")
        }
        let boxes = CBuffer<Float>(4 * m), scores = CBuffer<Float>(m)
        let labels = CBuffer<Int64>(m), indices = CBuffer<Int64>(m)
        var regions = mvlm_regions(count: 0, boxes: boxes.pointer, labels: labels.pointer, scores: scores.pointer,
                                   proposal_indices: indices.pointer)
        try check(mvlm_select_regions(&c, proposals.pointer, valid.pointer, r, classLogits, boxDeltas, &regions))
        let count = Int(regions.count)
        let tokens = CBuffer<Float>(count * Int(c.region_dim)), imageBoxes = CBuffer<Float>(4 * count)
        var box = letterbox
        try check(mvlm_region_tokens(&c, &regions, features, r, &box, tokens.pointer, imageBoxes.pointer))
        let tags = try (0..<count).map { i -> String in
            let label = Int(labels.pointer[i])
            guard classNames.indices.contains(label) else { throw MiniVLMError(.internalError, "label \(label) outside the classes") }
            return classNames[label]
        }
        let a = Int(c.num_attributes)
        let detections = (0..<count).map { i -> Detection in
            let row = Int(indices.pointer[i]) * a // the attribute head of the proposal the region came from
            var best = 0
            for j in 0..<a where attributeLogits[row + j] > attributeLogits[row + best] { best = j }
            let attribute = spec.attributes.indices.contains(best) ? spec.attributes[best] : "attribute_\(best)"
            return Detection(id: i, box: Array(imageBoxes.array[(4 * i)..<(4 * i + 4)]), label: tags[i],
                             score: scores.pointer[i], attribute: attribute)
        }
        // Stable sort by descending score, as python_ref detections_of.
        let sorted = detections.enumerated().sorted { ($0.element.score, -$0.offset) > ($1.element.score, -$1.offset) }.map(\.element)
        return Analysis(letterbox: letterbox, tags: tags, regionTokens: tokens.array, detections: sorted, timings: Timings())
    }

    // MARK: fusion

    /// `[CLS] text [SEP] | tags [SEP] | regions`; `text` nil packs the caption layout.
    public func pack(_ analysis: Analysis, text: String?) throws -> FusionInputs {
        var c = config
        let tt = Int(c.max_text_tags_len), rr = Int(c.max_regions), dim = Int(c.region_dim)
        let ids = CBuffer<Int64>(tt), types = CBuffer<Int64>(tt), mask = CBuffer<Float>(tt)
        let regions = CBuffer<Float>(rr * dim), regionMask = CBuffer<Float>(rr)
        var out = mvlm_fusion_inputs(input_ids: ids.pointer, token_type_ids: types.pointer, token_mask: mask.pointer,
                                     regions: regions.pointer, region_mask: regionMask.pointer)
        let cTags = analysis.tags.map { strdup($0) }
        defer { cTags.forEach { free($0) } }
        let tagPointers = cTags.map { UnsafePointer<CChar>($0) }
        let count = analysis.tags.count
        try tagPointers.withUnsafeBufferPointer { tags in
            let textData = text.map { Data($0.utf8) } ?? Data()
            try withBytes(textData) { bytes, length in
                try check(mvlm_pack_inputs(tokenizer.handle, &c, text == nil ? nil : bytes, length, tags.baseAddress, count,
                                           analysis.regionTokens, count, text == nil ? 0 : 1, &out))
            }
        }
        return FusionInputs(inputIds: ids.array, tokenTypeIds: types.array, tokenMask: mask.array, regions: regions.array,
                            regionMask: regionMask.array)
    }

    private func fusionGraphInputs(_ p: FusionInputs) -> [String: HostTensor] {
        let tt = Int(config.max_text_tags_len), rr = Int(config.max_regions), dim = Int(config.region_dim)
        return [
            "input_ids": .int64(values: p.inputIds, shape: [1, tt]),
            "token_type_ids": .int64(values: p.tokenTypeIds, shape: [1, tt]),
            "token_mask": .float(values: p.tokenMask, shape: [1, tt]),
            "regions": .float(values: p.regions, shape: [1, rr, dim]),
            "region_mask": .float(values: p.regionMask, shape: [1, rr]),
        ]
    }

    /// Greedy (numBeams = 1) or beam-search caption; the core decodes, caption_step runs per step.
    public func caption(_ analysis: Analysis, numBeams: Int = 1, lengthPenalty: Double = 1.0) throws -> (Caption, Timings) {
        var timings = Timings()
        let inputs = try timings.measure("pack") { try pack(analysis, text: nil) }
        let c = Int(config.max_text_len), tags = Int(config.max_tags_len), rr = Int(config.max_regions)
        let prefix = try run("caption_prefix", [
            "tag_ids": .int64(values: Array(inputs.inputIds[c...]), shape: [1, tags]),
            "tag_type_ids": .int64(values: Array(inputs.tokenTypeIds[c...]), shape: [1, tags]),
            "tag_mask": .float(values: Array(inputs.tokenMask[c...]), shape: [1, tags]),
            "regions": .float(values: inputs.regions, shape: [1, rr, Int(config.region_dim)]),
            "region_mask": .float(values: inputs.regionMask, shape: [1, rr]),
        ], &timings)
        let context = StepContext(runner: try runner("caption_step"), config: config)
        let ids = CBuffer(inputs.inputIds), types = CBuffer(inputs.tokenTypeIds), mask = CBuffer(inputs.tokenMask)
        let regions = CBuffer(inputs.regions), regionMask = CBuffer(inputs.regionMask)
        var packed = mvlm_fusion_inputs(input_ids: ids.pointer, token_type_ids: types.pointer, token_mask: mask.pointer,
                                        regions: regions.pointer, region_mask: regionMask.pointer)
        var options = mvlm_caption_options(num_beams: Int32(numBeams), length_penalty: lengthPenalty, max_caption_tokens: 0)
        var result = mvlm_caption()
        var cfg = config
        let keys = try Self.floats(prefix, "prefix_keys"), values = try Self.floats(prefix, "prefix_values")
        let start = DispatchTime.now().uptimeNanoseconds
        let status = mvlm_caption_decode(&cfg, &packed, keys, values, &options, runCaptionStep,
                                         Unmanaged.passUnretained(context).toOpaque(), &result)
        if let error = context.error { throw error } // the graph's own error, not just "callback failed"
        try check(status)
        let total = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        timings.add("caption_step", context.stepMs)
        timings.add("decode (host)", total - context.stepMs)
        let tokenIds = withUnsafeBytes(of: &result.token_ids) { Array($0.bindMemory(to: Int64.self).prefix(Int(result.num_tokens))) }
        let text = try timings.measure("detokenize") { try tokenizer.decode(tokenIds) }
        return (Caption(text: text, tokenIds: tokenIds, score: result.score, finished: result.finished != 0), timings)
    }

    /// The most likely answer from the model's answer vocabulary.
    public func answer(_ analysis: Analysis, question: String) throws -> (String, Timings) {
        var timings = Timings()
        let packed = try timings.measure("pack") { try pack(analysis, text: question) }
        let logits = try Self.floats(try run("vqa", fusionGraphInputs(packed), &timings), "answer_logits")
        guard let best = logits.indices.max(by: { logits[$0] < logits[$1] || (logits[$0] == logits[$1] && $0 > $1) }),
              spec.answers.indices.contains(best) else {
            throw MiniVLMError(.config, "the answer logits do not match the answer vocabulary")
        }
        return (spec.answers[best], timings)
    }

    /// Probability that `text` describes the image (match head, class 1).
    public func match(_ analysis: Analysis, text: String) throws -> (Float, Timings) {
        var timings = Timings()
        let packed = try timings.measure("pack") { try pack(analysis, text: text) }
        let logits = try Self.floats(try run("match", fusionGraphInputs(packed), &timings), "match_logits")
        guard logits.count == 2 else { throw MiniVLMError(.config, "match_logits has \(logits.count) values, expected 2") }
        return (1 / (1 + exp(logits[0] - logits[1])), timings)
    }
}

/// State of one caption decode, reached from the C callback through `user_data`.
final class StepContext {
    let runner: GraphRunner
    let config: mvlm_config
    var error: Error?
    var stepMs = 0.0

    init(runner: GraphRunner, config: mvlm_config) {
        self.runner = runner
        self.config = config
    }

    func run(_ r: mvlm_step_request) throws {
        let n = Int(r.num_beams), layers = Int(config.num_layers), heads = Int(config.num_heads), d = Int(config.head_dim)
        let p = Int(config.max_tags_len + config.max_regions), c = Int(config.max_text_len), v = Int(config.vocab_size)
        func floats(_ pointer: UnsafePointer<Float>, _ shape: [Int]) -> HostTensor {
            .float(values: Array(UnsafeBufferPointer(start: pointer, count: shape.reduce(1, *))), shape: shape)
        }
        func longs(_ pointer: UnsafePointer<Int64>, _ shape: [Int]) -> HostTensor {
            .int64(values: Array(UnsafeBufferPointer(start: pointer, count: shape.reduce(1, *))), shape: shape)
        }
        let inputs: [String: HostTensor] = [
            "token_ids": longs(r.token_ids, [n, 2]),
            "position_ids": longs(r.position_ids, [n, 2]),
            "prefix_keys": floats(r.prefix_keys, [layers, n, heads, p, d]),
            "prefix_values": floats(r.prefix_values, [layers, n, heads, p, d]),
            "prefix_mask": floats(r.prefix_mask, [n, p]),
            "cache_keys": floats(r.cache_keys, [layers, n, heads, c, d]),
            "cache_values": floats(r.cache_values, [layers, n, heads, c, d]),
            "cache_mask": floats(r.cache_mask, [n, c]),
        ]
        let start = DispatchTime.now().uptimeNanoseconds
        let outputs = try runner.runBatched(inputs, batch: n)
        stepMs += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        for (name, target, count) in [("mask_logits", r.mask_logits, n * v), ("new_keys", r.new_keys, layers * n * heads * d),
                                      ("new_values", r.new_values, layers * n * heads * d)] {
            guard let t = outputs[name], let target else { throw MiniVLMError(.runtime, "caption_step returned no '\(name)'") }
            let values = try t.floats()
            guard values.count == count else {
                throw MiniVLMError(.runtime, "caption_step '\(name)' has \(values.count) values, the decoder expects \(count)")
            }
            values.withUnsafeBufferPointer { target.update(from: $0.baseAddress!, count: count) }
        }
    }
}

/// The C callback the core calls once per decoding step.
private let runCaptionStep: mvlm_step_fn = { userData, request in
    guard let userData, let request else { return 1 }
    let context = Unmanaged<StepContext>.fromOpaque(userData).takeUnretainedValue()
    do {
        try context.run(request.pointee)
        return 0
    } catch {
        context.error = error
        return 1
    }
}
