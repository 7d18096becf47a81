// Replays a build's own golden/ (every recorded graph call, written by minivlm-convert) through the runtime of the
// machine the test runs on — `swift test` on a Mac, or a simulator / device through the app's test scheme — once
// per runtime choice the build allows (Core ML / Core AI compute units, ExecuTorch threads), and holds each graph
// output to the build's own tolerance row (manifest.json "tolerances", the numbers `minivlm parity` prints).
// It also opens each build end to end (manifest verification, runtime plan, warm-up) and checks Core ML's compile
// cache in the app's Caches.
//
// Builds: MINIVLM_TEST_BUILDS (folders separated by ":"), else every build folder in <repo>/out/, else the
// build folders bundled in the host app ("minivlm", "builds/*"). With none the tests are skipped, saying so.

import Foundation
import XCTest
@testable import MiniVLM
#if canImport(MiniVLMExecuTorch)
import MiniVLMExecuTorch
#endif

private let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

/// The build folders under test.
private func buildsUnderTest() -> [URL] {
    let files = FileManager.default
    func builds(in folder: URL) -> [URL] {
        let names = (try? files.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.sorted().map { folder.appendingPathComponent($0) }
            .filter { files.fileExists(atPath: $0.appendingPathComponent("manifest.json").path) }
    }
    if let list = ProcessInfo.processInfo.environment["MINIVLM_TEST_BUILDS"], !list.isEmpty {
        return list.split(separator: ":").map { URL(fileURLWithPath: String($0)) }
    }
    let out = builds(in: repoRoot.appendingPathComponent("out"))
    if !out.isEmpty { return out }
    guard let resources = Bundle.main.resourceURL else { return [] }
    let single = resources.appendingPathComponent("minivlm")
    return (files.fileExists(atPath: single.appendingPathComponent("manifest.json").path) ? [single] : [])
        + builds(in: resources.appendingPathComponent("builds"))
}

/// The manifest entries the replay reads.
private struct ReplayManifest: Decodable {
    struct Limit: Decodable {
        let limit: String
        let value: Double
        let bound: String
    }

    struct Tolerances: Decodable {
        let graph_max_abs: Limit?
        let graph_min_psnr_db: Limit?
        let graph_min_cosine: Limit
    }

    let target: String
    let precision: String
    let graphs: [String: GraphSpec]
    let graph_order: [String]?
    let weights_file: String?
    let golden_dir: String?
    let tolerances: Tolerances
}

/// The runtime choices a build's target offers; `BuildChecks.plan` says which of them the build allows.
private func runtimeChoices(_ target: String) -> [RuntimeOptions] {
    switch target {
    case "executorch":
        let cores = ProcessInfo.processInfo.activeProcessorCount
        return Array(Set([1, cores])).sorted().map { RuntimeOptions(threads: $0) }
    default:
        return [ComputeUnitsChoice.auto, .all, .cpuOnly, .cpuAndGPU, .cpuAndNeuralEngine].map { RuntimeOptions(computeUnits: $0) }
    }
}

/// Error statistics of one graph output over every replayed call.
private struct OutputStats {
    var peak: Float = 0
    var maxAbs: Float = 0
    var squaredError: Double = 0
    var count = 0
    var minCosine: Double = 1

    mutating func add(_ got: [Float], _ want: [Float]) {
        var dot = 0.0, gotNorm = 0.0, wantNorm = 0.0
        for (g, w) in zip(got, want) {
            let e = g - w
            peak = max(peak, abs(w))
            maxAbs = max(maxAbs, abs(e).isNaN ? .infinity : abs(e))
            squaredError += Double(e) * Double(e)
            dot += Double(g) * Double(w)
            gotNorm += Double(g) * Double(g)
            wantNorm += Double(w) * Double(w)
        }
        count += want.count
        // Two all-zero tensors point the same way.
        let cosine = gotNorm == 0 && wantNorm == 0 ? 1 : dot / (gotNorm.squareRoot() * wantNorm.squareRoot())
        minCosine = min(minCosine, cosine.isNaN ? -1 : cosine)
    }

    var relativeMaxAbs: Double { Double(maxAbs) / Double(max(peak, .leastNormalMagnitude)) }
    var psnr: Double {
        let mse = squaredError / Double(max(count, 1))
        return mse == 0 ? .infinity : 20 * log10(Double(peak) / mse.squareRoot())
    }
}

final class BuildReplayTests: XCTestCase {
    override func setUp() {
        super.setUp()
        #if canImport(MiniVLMExecuTorch)
        ExecuTorchBackend.register()
        #endif
    }

    private func builds() throws -> [URL] {
        let found = buildsUnderTest()
        if found.isEmpty {
            throw XCTSkip("no build to replay: set MINIVLM_TEST_BUILDS to build folders, or convert one into <repo>/out/")
        }
        return found
    }

    private func caches() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("minivlm-test-caches-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// Every golden graph call of every build, under every runtime plan the build allows, within its tolerances.
    func testGoldenGraphCallsUnderEveryRuntimeChoice() throws {
        for folder in try builds() {
            let manifest = try JSONDecoder().decode(ReplayManifest.self, from: Data(contentsOf: folder.appendingPathComponent("manifest.json")))
            let runtimeVersion = manifest.target == "executorch" ? Backends.executorch?.runtimeVersion : nil
            try BuildChecks.verify(folder: folder, runtime: manifest.target, runtimeVersion: runtimeVersion)
            let golden = folder.appendingPathComponent(manifest.golden_dir ?? "golden")
            let index = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: golden.appendingPathComponent("index.json"))) as? [String: Any])
            let cases = try XCTUnwrap(index["cases"] as? [String: Any], "\(golden.path)/index.json has no cases")
            var plans: [String] = []
            for options in runtimeChoices(manifest.target) {
                let request = RuntimeRequest(computeUnits: options.computeUnits, threads: options.threads,
                                             availableCores: ProcessInfo.processInfo.activeProcessorCount)
                let plan: RuntimePlan
                do {
                    plan = try BuildChecks.plan(folder: folder, request: request)
                } catch {
                    // The build does not allow this choice; the default one must always plan.
                    XCTAssertNotEqual(options, RuntimeOptions(), "\(folder.lastPathComponent): the default runtime choice has no plan: \(error)")
                    continue
                }
                let key = "\(plan.backend)/\(plan.computeUnits)/\(plan.threads)"
                if plans.contains(key) { continue }
                plans.append(key)
                let what = "\(folder.lastPathComponent) [\(key)]"
                if plan.backend == "executorch" { _ = Backends.executorch?.setThreads(plan.threads) }
                let backend = try Backends.backend(for: plan.backend, plan: plan, folder: folder,
                                                   weightsFile: manifest.weights_file, caches: try caches())
                try replay(folder: folder, golden: golden, cases: cases, manifest: manifest, backend: backend, what: what)
            }
            XCTAssertFalse(plans.isEmpty, "\(folder.lastPathComponent): no runtime choice was replayed")
        }
    }

    private func replay(folder: URL, golden: URL, cases: [String: Any], manifest: ReplayManifest, backend: GraphBackend,
                        what: String) throws {
        let order = manifest.graph_order ?? manifest.graphs.keys.sorted()
        for graph in order {
            let spec = try XCTUnwrap(manifest.graphs[graph], "\(what): no graph \(graph)")
            let runner = try backend(folder, graph, spec)
            var stats: [String: OutputStats] = [:]
            var calls = 0
            for (name, value) in cases.sorted(by: { $0.key < $1.key }) {
                let graphs = (value as? [String: Any])?["graphs"] as? [String: Any] ?? [:]
                for case let call as [String: Any] in graphs[graph] as? [Any] ?? [] {
                    let inputs = try spec.inputs.reduce(into: [String: HostTensor]()) { out, s in
                        out[s.name] = try tensor(golden, (call["inputs"] as? [String: Any])?[s.name], "\(name) \(graph) input \(s.name)")
                    }
                    let first = try XCTUnwrap(spec.inputs.first.flatMap { inputs[$0.name] })
                    let batch = first.shape[spec.inputs[0].batchAxis] / spec.inputs[0].shape[spec.inputs[0].batchAxis]
                    let outputs = try runner.runBatched(inputs, batch: max(batch, 1))
                    for s in spec.outputs {
                        let want = try tensor(golden, (call["outputs"] as? [String: Any])?[s.name], "\(name) \(graph) output \(s.name)")
                        let got = try XCTUnwrap(outputs[s.name], "\(what) \(graph) returned no \(s.name)")
                        XCTAssertEqual(got.shape, want.shape, "\(what) \(name) \(graph).\(s.name) shape")
                        switch (got, want) {
                        case (.int64(let g, _), .int64(let w, _)):
                            XCTAssertEqual(g, w, "\(what) \(name) \(graph).\(s.name)")
                        default:
                            stats[s.name, default: OutputStats()].add(try floats(got), try floats(want))
                        }
                    }
                    calls += 1
                }
            }
            XCTAssertGreaterThan(calls, 0, "\(what): golden/ has no call of \(graph)")
            for (output, s) in stats.sorted(by: { $0.key < $1.key }) {
                let line = "\(what) \(graph).\(output): max abs \(s.maxAbs) of peak \(s.peak), PSNR \(String(format: "%.1f", s.psnr)) dB, min cosine \(s.minCosine)"
                if let limit = manifest.tolerances.graph_max_abs {
                    XCTAssertLessThanOrEqual(s.relativeMaxAbs, limit.value, "\(line) > \(limit.limit)")
                }
                if let limit = manifest.tolerances.graph_min_psnr_db {
                    XCTAssertGreaterThanOrEqual(s.psnr, limit.value, "\(line) < \(limit.limit)")
                }
                XCTAssertGreaterThanOrEqual(s.minCosine, manifest.tolerances.graph_min_cosine.value,
                                            "\(line) < \(manifest.tolerances.graph_min_cosine.limit)")
            }
        }
    }

    /// Opening each build as the app does: verification, plan, every graph, a warm-up run; the plan is shown.
    func testEveryBuildOpensAndWarmsUp() throws {
        for folder in try builds() {
            let opened = try Backends.open(folder: folder, caches: try caches())
            XCTAssertFalse(opened.planDescription.isEmpty)
            XCTAssertGreaterThan(opened.loadMs, 0)
            XCTAssertGreaterThan(try opened.warmUp(), 0, folder.lastPathComponent)
        }
    }

    /// A Core ML build compiles into the Caches path once, is reused by the next open, and is compiled again
    /// when the cached model is damaged.
    func testCoreMLCompileCacheIsReusedAndRepaired() throws {
        guard #available(iOS 18.0, macOS 15.0, *) else { throw XCTSkip("Core ML builds need iOS 18 / macOS 15") }
        let manifests = try builds().compactMap { folder -> (URL, ReplayManifest)? in
            let url = folder.appendingPathComponent("manifest.json")
            return (try? JSONDecoder().decode(ReplayManifest.self, from: Data(contentsOf: url))).map { (folder, $0) }
        }
        guard let (folder, manifest) = manifests.first(where: { $0.1.target == "coreml" }) else {
            throw XCTSkip("no coreml build among the builds under test")
        }
        let caches = try caches()
        _ = try Backends.open(folder: folder, caches: caches)
        let graph = try XCTUnwrap(manifest.graphs.keys.first)
        let compiled = try CoreMLCompiledCache(folder: folder, caches: caches).compiledURL(graph: graph)
        XCTAssertTrue(compiled.path.hasPrefix(caches.path), "compiled into \(compiled.path), not the Caches")
        let stamp = try FileManager.default.attributesOfItem(atPath: compiled.path)[.creationDate] as? Date
        _ = try Backends.open(folder: folder, caches: caches)
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: compiled.path)[.creationDate] as? Date, stamp,
                       "the second open compiled again")
        // Damage the cache: every file of the compiled model emptied.
        let files = FileManager.default.enumerator(at: compiled, includingPropertiesForKeys: [.isRegularFileKey])
        while let file = files?.nextObject() as? URL {
            if (try? file.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true { try Data().write(to: file) }
        }
        let repaired = try Backends.open(folder: folder, caches: caches)
        XCTAssertGreaterThan(try repaired.warmUp(), 0)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: compiled.deletingLastPathComponent().path)
            .filter { $0.hasSuffix(".partial") }
        XCTAssertEqual(leftovers, [], "staging folders left behind")
    }
}

/// A golden entry ({"file", "dtype", "shape"}) as a host tensor.
private func tensor(_ golden: URL, _ entry: Any?, _ what: String) throws -> HostTensor {
    let e = try XCTUnwrap(entry as? [String: Any], "\(what): not in golden/index.json")
    let file = try XCTUnwrap(e["file"] as? String, what), dtype = try XCTUnwrap(e["dtype"] as? String, what)
    let shape = try XCTUnwrap(e["shape"] as? [Int], what)
    let data = try Data(contentsOf: golden.appendingPathComponent(file))
    let count = shape.reduce(1, *)
    func load<T: FixedWidthInteger>(_: T.Type) throws -> [T] {
        guard data.count == count * MemoryLayout<T>.size else { throw MiniVLMError(.badFile, "\(what): \(data.count) bytes for \(shape)") }
        return data.withUnsafeBytes { raw in (0..<count).map { T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self)) } }
    }
    switch dtype {
    case "float32": return .float(values: try load(UInt32.self).map { Float(bitPattern: $0) }, shape: shape)
    case "int64": return .int64(values: try load(Int64.self), shape: shape)
    case "int32": return .int64(values: try load(Int32.self).map(Int64.init), shape: shape)
    default: throw MiniVLMError(.badFile, "\(what): dtype \(dtype), the replay reads float32, int64 and int32")
    }
}

private func floats(_ t: HostTensor) throws -> [Float] {
    switch t {
    case .float(let values, _): return values
    case .int64(let values, _): return values.map { Float($0) }
    }
}
