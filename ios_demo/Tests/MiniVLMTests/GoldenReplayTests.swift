// Replays python_ref's host goldens (tests/golden/, written by scripts/update_goldens.py) through Swift -> the
// native core, and runs the Pipeline over graph runners that replay the recorded graph outputs. The Swift
// counterpart of android_demo's GoldenReplayMain.kt; run with `swift test` on macOS.
// Tolerances as sdk/native/tests/check.hpp: 1e-5 for normalised floats, 1e-5 x max(1, |e|) for box
// coordinates in pixels, 1e-4 for a caption score (a sum of float32 log-probabilities).

import CMiniVLM
import Foundation
import XCTest
@testable import MiniVLM

private let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()
private let goldenDir = repo.appendingPathComponent("tests/golden")
private let evlmDir = repo.appendingPathComponent("tests/golden_efficientvlm")
private let vocabURL = repo.appendingPathComponent("python_ref/vocab.txt")

private let floatTol: Float = 1e-5
private let coordRelTol: Float = 1e-5
private let scoreTol = 1e-4

/// tests/golden/index.json (or another goldens folder's) and its raw little-endian arrays.
struct Golden {
    let index: [String: Any]
    let dir: URL

    init(dir: URL = goldenDir) throws {
        self.dir = dir
        let data = try Data(contentsOf: dir.appendingPathComponent("index.json"))
        index = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    private func bytes(_ entry: Any?) throws -> (Data, [Int]) {
        let e = try XCTUnwrap(entry as? [String: Any])
        let file = try XCTUnwrap(e["file"] as? String)
        let shape = try XCTUnwrap(e["shape"] as? [Int])
        return (try Data(contentsOf: dir.appendingPathComponent(file)), shape)
    }

    func floats(_ entry: Any?) throws -> [Float] {
        let (data, _) = try bytes(entry)
        return data.withUnsafeBytes { raw in (0..<(data.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.load(fromByteOffset: $0 * 4, as: UInt32.self))) } }
    }

    func longs(_ entry: Any?) throws -> [Int64] {
        let (data, _) = try bytes(entry)
        return data.withUnsafeBytes { raw in (0..<(data.count / 8)).map { Int64(littleEndian: raw.load(fromByteOffset: $0 * 8, as: Int64.self)) } }
    }

    func u8(_ entry: Any?) throws -> ([UInt8], [Int]) {
        let (data, shape) = try bytes(entry)
        return ([UInt8](data), shape)
    }
}

private func dict(_ value: Any?, _ key: String) -> [String: Any] { (value as? [String: Any])?[key] as? [String: Any] ?? [:] }

func assertClose(_ got: [Float], _ expected: [Float], _ tol: Float, relative: Bool = false, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(got.count, expected.count, "\(what): size", file: file, line: line)
    for (i, (g, e)) in zip(got, expected).enumerated() {
        let bound = tol * (relative ? max(1, abs(e)) : 1)
        if !(abs(g - e) <= bound) && !(g.isNaN && e.isNaN) {
            XCTFail("\(what)[\(i)]: got \(g), expected \(e), tolerance \(bound)", file: file, line: line)
            return
        }
    }
}

/// A decode table of converters/caption_goldens.py: logits rows by token history ([CLS] first).
struct DecodeTable {
    var rows: [[Int64]: Int] = [:]
    let topIndices: [Int64], topLogits: [Float], restLogsumexp: [Float]
    let k: Int, vocab: Int

    init(_ golden: Golden, _ table: [String: Any], vocab: Int) throws {
        let histories = try golden.longs(table["histories"])
        let width = try XCTUnwrap((table["histories"] as? [String: Any])?["shape"] as? [Int])[1]
        for m in 0..<(histories.count / width) {
            rows[Array(histories[(m * width)..<((m + 1) * width)].prefix { $0 >= 0 })] = m
        }
        topIndices = try golden.longs(table["top_indices"])
        topLogits = try golden.floats(table["top_logits"])
        restLogsumexp = try golden.floats(table["rest_logsumexp"])
        k = topLogits.count / restLogsumexp.count
        self.vocab = vocab
    }

    func logits(_ history: [Int64]) throws -> [Float] {
        guard let m = rows[history] else { throw MiniVLMError(.runtime, "unrecorded history \(history)") }
        let lowest = topLogits[(m * k)..<((m + 1) * k)].min()!
        let filler = min(Float(Double(restLogsumexp[m]) - log(Double(vocab - k))), lowest.nextDown)
        var row = [Float](repeating: filler, count: vocab)
        for j in 0..<k { row[Int(topIndices[m * k + j])] = topLogits[m * k + j] }
        return row
    }
}

final class ReplayRunner: GraphRunner {
    let name: String
    let spec: GraphSpec
    let body: ([String: HostTensor]) throws -> [String: HostTensor]

    init(_ name: String, _ spec: GraphSpec, _ body: @escaping ([String: HostTensor]) throws -> [String: HostTensor]) {
        self.name = name
        self.spec = spec
        self.body = body
    }

    func run(_ inputs: [String: HostTensor]) throws -> [String: HostTensor] { try body(inputs) }
}

final class GoldenReplayTests: XCTestCase {
    var golden: Golden!
    var manifest: Manifest!
    var config = mvlm_config()
    var tokenizer: Tokenizer!

    override func setUpWithError() throws {
        golden = try Golden()
        manifest = try Manifest(contentsOf: goldenDir.appendingPathComponent("manifest.json"))
        config = try manifest.config()
        tokenizer = try Tokenizer(vocab: vocabURL)
    }

    func testTokenizerCases() throws {
        for case let c as [String: Any] in try XCTUnwrap(golden.index["tokenizer"] as? [Any]) {
            let text = try XCTUnwrap(c["text"] as? String)
            let ids = try tokenizer.encode(text)
            XCTAssertEqual(ids, try XCTUnwrap(c["ids"] as? [Int]).map(Int64.init), text)
            XCTAssertEqual(try tokenizer.decode(ids), c["decoded"] as? String, text)
        }
    }

    func testPreprocessCases() throws {
        for case let c as [String: Any] in try XCTUnwrap(golden.index["preprocess_cases"] as? [Any]) {
            let (rgb, shape) = try golden.u8(c["image"])
            var small = config
            small.image_size = Int32(try XCTUnwrap(c["size"] as? Int))
            let n = 3 * Int(small.image_size) * Int(small.image_size)
            var out = [Float](repeating: 0, count: n)
            var box = mvlm_letterbox()
            try check(mvlm_preprocess(&small, rgb, Int32(shape[1]), Int32(shape[0]), shape[1] * 3, Int32(MVLM_PIXELS_RGB8), &out, n, &box))
            assertClose(out, try golden.floats(c["pixels"]), floatTol, "pixels \(c["source"] ?? "")")
            XCTAssertEqual(box.scale, dict(c, "letterbox")["scale"] as? Double)
        }
    }

    /// Graph specs from the config's sizes (tests/golden has no graphs).
    private func syntheticSpec(answers: [String], attributes: [String], anchors: Int) -> BuildSpec {
        let c = config
        let s = Int(c.image_size), k = Int(c.post_nms_top_n), cl = Int(c.num_classes), tags = Int(c.max_tags_len)
        let r = Int(c.max_regions), l = Int(c.num_layers), h = Int(c.num_heads), d = Int(c.head_dim)
        let p = tags + r, t = Int(c.max_text_len), tt = Int(c.max_text_tags_len), dim = Int(c.region_dim)
        func f(_ n: String, _ shape: [Int], _ axis: Int = 0) -> TensorSpec { TensorSpec(name: n, shape: shape, dtype: .float32, batchAxis: axis) }
        func i(_ n: String, _ shape: [Int]) -> TensorSpec { TensorSpec(name: n, shape: shape, dtype: .int64) }
        let fusion = [i("input_ids", [1, tt]), i("token_type_ids", [1, tt]), f("token_mask", [1, tt]), f("regions", [1, r, dim]), f("region_mask", [1, r])]
        let graphs: [String: GraphSpec] = [
            "tee_stage1": GraphSpec(file: "-", inputs: [f("images", [1, 3, s, s])], outputs: [f("objectness", [1, anchors]), f("deltas", [1, anchors, 4])]),
            "tee_stage2": GraphSpec(file: "-", inputs: [f("boxes", [1, k, 4])], outputs: [
                f("region_features", [1, k, Int(c.representation_size)]), f("class_logits", [1, k, cl]),
                f("box_deltas", [1, k, 4 * cl]), f("attribute_logits", [1, k, Int(c.num_attributes)])]),
            "caption_prefix": GraphSpec(file: "-", inputs: [i("tag_ids", [1, tags]), i("tag_type_ids", [1, tags]), f("tag_mask", [1, tags]),
                                                           f("regions", [1, r, dim]), f("region_mask", [1, r])],
                                        outputs: [f("prefix_keys", [l, 1, h, p, d], 1), f("prefix_values", [l, 1, h, p, d], 1)]),
            "caption_step": GraphSpec(file: "-", inputs: [i("token_ids", [1, 2]), i("position_ids", [1, 2]), f("prefix_keys", [l, 1, h, p, d], 1),
                                                         f("prefix_values", [l, 1, h, p, d], 1), f("prefix_mask", [1, p]),
                                                         f("cache_keys", [l, 1, h, t, d], 1), f("cache_values", [l, 1, h, t, d], 1), f("cache_mask", [1, t])],
                                      outputs: [f("mask_logits", [1, Int(c.vocab_size)]), f("new_keys", [l, 1, h, 1, d], 1), f("new_values", [l, 1, h, 1, d], 1)]),
            "vqa": GraphSpec(file: "-", inputs: fusion, outputs: [f("answer_logits", [1, answers.count])]),
            "match": GraphSpec(file: "-", inputs: fusion, outputs: [f("match_logits", [1, 2])]),
        ]
        return BuildSpec(target: "replay", delegate: nil, precision: "fp32", graphs: graphs, answers: answers, attributes: attributes)
    }

    func testPipelineReplaysEveryImage() throws {
        let vocabularies = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: goldenDir.appendingPathComponent("vocabularies.json"))) as? [String: Any])
        let answers = try XCTUnwrap(vocabularies["answers"] as? [String]), attributes = try XCTUnwrap(vocabularies["attributes"] as? [String])
        let anchors = try golden.floats(golden.index["anchors"]).count / 4
        let cases = try XCTUnwrap(golden.index["cases"] as? [String: Any])
        XCTAssertGreaterThanOrEqual(cases.count, 4)
        for (name, value) in cases {
            let c = try XCTUnwrap(value as? [String: Any])
            let hs = dict(c, "host_steps")
            var table: DecodeTable?
            let cfg = config
            let k = Int(cfg.post_nms_top_n)
            let g: Golden = golden
            let backend: GraphBackend = { _, graph, spec in
                switch graph {
                case "tee_stage1":
                    return ReplayRunner(graph, spec) { _ in [
                        "objectness": .float(values: try g.floats(dict(dict(hs, "proposals"), "inputs")["objectness"]), shape: [1, anchors]),
                        "deltas": .float(values: try g.floats(dict(dict(hs, "proposals"), "inputs")["deltas"]), shape: [1, anchors, 4]),
                    ] }
                case "tee_stage2":
                    return ReplayRunner(graph, spec) { inputs in
                        let rs = dict(dict(hs, "region_selection"), "inputs")
                        let want = try g.floats(dict(dict(hs, "proposals"), "outputs")["proposals"])
                        assertClose(try inputs["boxes"]!.floats(), want, coordRelTol, relative: true, "\(name) stage-2 boxes")
                        let cl = Int(cfg.num_classes)
                        return ["region_features": .float(values: try g.floats(rs["features"]), shape: [1, k, Int(cfg.representation_size)]),
                                "class_logits": .float(values: try g.floats(rs["class_logits"]), shape: [1, k, cl]),
                                "box_deltas": .float(values: try g.floats(rs["box_deltas"]), shape: [1, k, 4 * cl]),
                                "attribute_logits": .float(values: try g.floats(rs["attribute_logits"]), shape: [1, k, Int(cfg.num_attributes)])]
                    }
                case "caption_prefix":
                    return ReplayRunner(graph, spec) { _ in
                        let zeros = [Float](repeating: 0, count: spec.outputs[0].count)
                        return ["prefix_keys": .float(values: zeros, shape: spec.outputs[0].shape), "prefix_values": .float(values: zeros, shape: spec.outputs[1].shape)]
                    }
                case "caption_step":
                    // History = the cache's stored keys + the fed token: this fake returns the fed token as every new key.
                    return ReplayRunner(graph, spec) { inputs in
                        let tokens = try inputs["token_ids"]!.int64s(), positions = try inputs["position_ids"]!.int64s()
                        let cache = try inputs["cache_keys"]!.floats()
                        let t = Int(positions[1]), d = Int(cfg.head_dim)
                        let history = (0..<(t - 1)).map { Int64(cache[$0 * d]) } + [tokens[0]]
                        let fed = [Float](repeating: Float(tokens[0]), count: spec.outputs[1].count)
                        return ["mask_logits": .float(values: try table!.logits(history), shape: [1, Int(cfg.vocab_size)]),
                                "new_keys": .float(values: fed, shape: spec.outputs[1].shape), "new_values": .float(values: fed, shape: spec.outputs[2].shape)]
                    }
                default:
                    return ReplayRunner(graph, spec) { _ in throw MiniVLMError(.runtime, "\(graph) is not replayed") }
                }
            }
            let pipeline = try Pipeline(folder: goldenDir, spec: syntheticSpec(answers: answers, attributes: attributes, anchors: anchors),
                                        backend: backend, vocab: vocabURL)
            let height = try XCTUnwrap(c["height"] as? Int), width = try XCTUnwrap(c["width"] as? Int)
            let image = PixelImage(pixels: Data(count: height * width * 3), width: width, height: height, rowBytes: width * 3,
                                   format: Int32(MVLM_PIXELS_RGB8))
            let analysis = try pipeline.analyze(image)
            let detections = dict(dict(hs, "detections"), "outputs")
            XCTAssertEqual(analysis.tags, dict(detections, "tags")["value"] as? [String], name)
            assertClose(analysis.regionTokens, try golden.floats(detections["region_tokens"]), floatTol, "\(name) region tokens")
            let decoding = dict(c, "caption_decoding")
            for kind in ["greedy", "beam"] {
                guard let record = decoding[kind] as? [String: Any] else { continue }
                table = try DecodeTable(golden, dict(record, "table"), vocab: Int(cfg.vocab_size))
                let (caption, _) = try pipeline.caption(analysis, numBeams: try XCTUnwrap(record["num_beams"] as? Int),
                                                        lengthPenalty: try XCTUnwrap(record["length_penalty"] as? Double))
                XCTAssertEqual(caption.text, record["caption"] as? String, "\(name) \(kind)")
                XCTAssertEqual(caption.tokenIds, try XCTUnwrap(record["token_ids"] as? [Int]).map(Int64.init), "\(name) \(kind)")
                XCTAssertEqual(caption.finished, record["finished"] as? Bool, "\(name) \(kind)")
                XCTAssertEqual(caption.score, try XCTUnwrap(record["score"] as? Double), accuracy: scoreTol, "\(name) \(kind)")
            }
        }
    }

    func testMalformedInputThrows() throws {
        func expectError(_ kind: MiniVLMError.Kind, _ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try body(), file: file, line: line) { error in
                XCTAssertEqual((error as? MiniVLMError)?.kind, kind, "\(error)", file: file, line: line)
            }
        }
        expectError(.badInput) { _ = try self.tokenizer.encode(utf8: Data([0x61, 0xC3, 0x28])) }
        expectError(.badFile) { _ = try Tokenizer(vocabData: Data()) }
        let manifestData = try Data(contentsOf: goldenDir.appendingPathComponent("manifest.json"))
        expectError(.badFile) { _ = try Manifest(data: manifestData.prefix(manifestData.count / 2), folder: goldenDir) }
        var c = config
        var out = [Float](repeating: 0, count: 3 * Int(c.image_size) * Int(c.image_size))
        let status = mvlm_preprocess(&c, [UInt8](repeating: 0, count: 4), 0, 0, 0, Int32(MVLM_PIXELS_RGB8), &out, out.count, nil)
        XCTAssertEqual(status, Int32(MVLM_BAD_INPUT), String(cString: mvlm_last_error()))
    }
}

/// The EfficientVLM pipeline on tests/golden_efficientvlm (a graph-less build folder written from python_ref by
/// sdk/native/tools/make_efficientvlm_goldens.py, with every graph call recorded): each graph replays its recorded
/// calls in order and checks that it receives the recorded inputs; the pipeline must reproduce python_ref's
/// caption, answer, match probability and features. The Swift counterpart of EfficientVlmReplay.kt.
final class EfficientVLMReplayTests: XCTestCase {
    var golden: Golden!

    override func setUpWithError() throws {
        golden = try Golden(dir: evlmDir.appendingPathComponent("golden"))
    }

    /// Replays `graph`'s recorded calls of image `name`: call i must get call i's inputs (exactly: the core's host
    /// steps are bit-exact with python_ref's) and returns its outputs.
    private func backend(_ name: String) -> GraphBackend {
        let g: Golden = golden
        return { _, graph, spec in
            let calls = try XCTUnwrap(dict(dict(dict(g.index, "cases"), name), "graphs")[graph] as? [[String: Any]])
            var made = 0
            return ReplayRunner(graph, spec) { inputs in
                guard made < calls.count else { throw MiniVLMError(.runtime, "\(graph): more calls than the \(calls.count) recorded") }
                let call = calls[made]
                made += 1
                for s in spec.inputs {
                    let want = dict(call, "inputs")[s.name]
                    switch inputs[s.name] {
                    case .float(let values, _)?: XCTAssertEqual(values, try g.floats(want), "\(name) \(graph) call \(made - 1) \(s.name)")
                    case .int64(let values, _)?: XCTAssertEqual(values, try g.longs(want), "\(name) \(graph) call \(made - 1) \(s.name)")
                    case nil: XCTFail("\(name) \(graph): no input \(s.name)")
                    }
                }
                var out: [String: HostTensor] = [:]
                for s in spec.outputs { out[s.name] = .float(values: try g.floats(dict(call, "outputs")[s.name]), shape: s.shape) }
                return out
            }
        }
    }

    func testBuildSpecIsFamilyAware() throws {
        XCTAssertEqual(try buildFamily(folder: evlmDir), "efficientvlm")
        let spec = try BuildSpec(folder: evlmDir)
        XCTAssertEqual(spec.family, "efficientvlm")
        XCTAssertEqual(spec.graphOrder, efficientVLMGraphNames)
        XCTAssertEqual(spec.attributes, [])
        XCTAssertThrowsError(try Pipeline(folder: evlmDir, backend: backend("none"))) // the MiniVLM pipeline refuses it
    }

    func testPreprocessCases() throws {
        for case let c as [String: Any] in try XCTUnwrap(golden.index["preprocess_cases"] as? [Any]) {
            let (rgb, shape) = try golden.u8(c["image"])
            let size = try XCTUnwrap(c["size"] as? Int)
            var out = [UInt8](repeating: 0, count: 3 * size * size)
            try check(mvlm_evlm_resize(Int32(size), rgb, Int32(shape[1]), Int32(shape[0]), shape[1] * 3, Int32(MVLM_PIXELS_RGB8), &out, out.count))
            XCTAssertEqual(out, try golden.u8(c["resized"]).0, "resize \(c["source"] ?? "")")
        }
    }

    func testPipelineReplaysEveryImage() throws {
        let cases = try XCTUnwrap(golden.index["cases"] as? [String: Any])
        XCTAssertGreaterThanOrEqual(cases.count, 2)
        for (name, value) in cases {
            let hs = dict(value, "host_steps")
            let pipeline = try EfficientVLMPipeline(folder: evlmDir, backend: backend(name))
            let (rgb, shape) = try golden.u8(dict(dict(hs, "preprocess"), "inputs")["image"])
            let image = PixelImage(pixels: Data(rgb), width: shape[1], height: shape[0], rowBytes: shape[1] * 3, format: Int32(MVLM_PIXELS_RGB8))
            let (encoded, _) = try pipeline.encode(image)
            XCTAssertEqual(encoded.feature, try golden.floats(dict(dict(hs, "retrieval"), "outputs")["image_feature"]), name)
            let (caption, _) = try pipeline.caption(encoded)
            let want = dict(dict(hs, "greedy_caption"), "outputs")
            XCTAssertEqual(caption.tokenIds, try golden.longs(want["token_ids"]), name)
            XCTAssertEqual(caption.text, dict(want, "caption")["value"] as? String, name)
            XCTAssertEqual(caption.finished, dict(want, "finished")["value"] as? Bool, name)
            let question = try XCTUnwrap(dict(dict(dict(hs, "answer"), "inputs"), "question")["value"] as? String)
            XCTAssertEqual(try pipeline.answer(encoded, question: question).0, dict(dict(dict(hs, "answer"), "outputs"), "answer")["value"] as? String, name)
            let text = try XCTUnwrap(dict(dict(dict(hs, "match"), "inputs"), "text")["value"] as? String)
            let probability = try XCTUnwrap(dict(dict(dict(hs, "match"), "outputs"), "probability")["value"] as? Double)
            XCTAssertEqual(Double(try pipeline.match(encoded, text: text).0), probability, accuracy: 1e-6, name)
            let retrievalText = try XCTUnwrap(dict(dict(dict(hs, "retrieval"), "inputs"), "text")["value"] as? String)
            XCTAssertEqual(try pipeline.textFeature(retrievalText).0, try golden.floats(dict(dict(hs, "retrieval"), "outputs")["text_feature"]), name)
        }
    }

    func testMalformedInputThrows() throws {
        let name = try XCTUnwrap((golden.index["images"] as? [String])?.first)
        let pipeline = try EfficientVLMPipeline(folder: evlmDir, backend: backend(name))
        for text in ["", "   ", String(repeating: "red ", count: 64)] {
            XCTAssertThrowsError(try pipeline.pack(text)) { error in
                XCTAssertEqual((error as? MiniVLMError)?.kind, .badInput, "\(error)")
            }
        }
        let empty = PixelImage(pixels: Data(), width: 0, height: 0, rowBytes: 0, format: Int32(MVLM_PIXELS_RGB8))
        XCTAssertThrowsError(try pipeline.preprocess(empty))
    }
}
