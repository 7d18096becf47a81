// Runs one graph of a `--target coreml` build with Core ML: the build is one multifunction .mlpackage with one
// function per graph (the manifest's graphs.<name>.function), which needs iOS 18 / macOS 15. Inputs and outputs
// are addressed by the manifest's runtime_name and converted to its runtime_dtype (int32 token ids; float16
// outputs of an fp16 ML program are widened to float32 for the host steps). The package is compiled once per
// build into the app's Caches (CoreMLCompiledCache), never next to it: an app bundle is read-only on a device.

#if canImport(CoreML)
import CoreML
import Foundation

@available(iOS 18.0, macOS 15.0, *)
public final class CoreMLRunner: GraphRunner {
    public let name: String
    public let spec: GraphSpec
    private let model: MLModel

    /// A runtime plan's (or the manifest's) `compute_units` as Core ML's; converters/coreml.py converts with the
    /// same names.
    static func computeUnits(_ name: String) throws -> MLComputeUnits {
        switch name {
        case "all": return .all
        case "cpu_and_ne": return .cpuAndNeuralEngine
        case "cpu_and_gpu": return .cpuAndGPU
        case "cpu_only": return .cpuOnly
        case let other:
            throw MiniVLMError(.config, "the runtime plan's compute_units is '\(other)', expected all, cpu_and_ne, cpu_and_gpu or cpu_only")
        }
    }

    /// Loads the graph's function from the build's compiled model, which `cache` compiles once into the app's
    /// Caches (every graph's runner shares it; the app bundle is read-only on a device). `computeUnits` is the
    /// runtime plan's.
    public init(folder: URL, name: String, spec: GraphSpec, computeUnits: MLComputeUnits, cache: CoreMLCompiledCache) throws {
        self.name = name
        self.spec = spec
        guard let function = spec.function else {
            throw MiniVLMError(.badFile, "the manifest's graph '\(name)' names no function of \(spec.file)")
        }
        let configuration = MLModelConfiguration()
        configuration.computeUnits = computeUnits
        configuration.functionName = function
        model = try cache.load(graph: name, package: spec.file, configuration: configuration)
    }

    public func run(_ inputs: [String: HostTensor]) throws -> [String: HostTensor] {
        var features: [String: MLFeatureValue] = [:]
        for s in spec.inputs {
            guard let t = inputs[s.name] else { throw MiniVLMError(.invalidArgument, "\(name): missing input '\(s.name)'") }
            features[s.runtimeName] = MLFeatureValue(multiArray: try Self.multiArray(t, s))
        }
        let result: MLFeatureProvider
        do {
            result = try model.prediction(from: try MLDictionaryFeatureProvider(dictionary: features))
        } catch {
            throw MiniVLMError(.runtime, "Core ML \(name) failed: \(error.localizedDescription)")
        }
        var outputs: [String: HostTensor] = [:]
        for s in spec.outputs {
            guard let array = result.featureValue(for: s.runtimeName)?.multiArrayValue else {
                throw MiniVLMError(.runtime, "Core ML \(name) returned no '\(s.runtimeName)'")
            }
            outputs[s.name] = try Self.hostTensor(array, s)
        }
        return outputs
    }

    private static func multiArray(_ t: HostTensor, _ s: TensorSpec) throws -> MLMultiArray {
        let shape = s.shape.map { NSNumber(value: $0) }
        switch (t, s.runtimeDtype) {
        case (.float(let values, _), _):
            let array = try MLMultiArray(shape: shape, dataType: .float32)
            let p = array.dataPointer.bindMemory(to: Float.self, capacity: values.count)
            values.withUnsafeBufferPointer { p.update(from: $0.baseAddress!, count: values.count) }
            return array
        case (.int64(let values, _), .int32):
            let array = try MLMultiArray(shape: shape, dataType: .int32)
            let p = array.dataPointer.bindMemory(to: Int32.self, capacity: values.count)
            for (i, v) in values.enumerated() {
                guard let narrow = Int32(exactly: v) else { throw MiniVLMError(.invalidArgument, "\(s.name): \(v) does not fit int32") }
                p[i] = narrow
            }
            return array
        case (.int64(let values, _), _):
            // Core ML multi-arrays have no int64; the converter always declares int32 for id inputs.
            throw MiniVLMError(.config, "\(s.name): int64 input with runtime dtype \(s.runtimeDtype) (\(values.count) values)")
        }
    }

    private static func hostTensor(_ array: MLMultiArray, _ s: TensorSpec) throws -> HostTensor {
        guard array.count == s.count else {
            throw MiniVLMError(.runtime, "\(s.name) has \(array.count) values, the manifest says \(s.shape)")
        }
        // Strides may pad the last axis; read element by element through the array's own indexing when they do.
        let contiguous = array.strides.map(\.intValue) == contiguousStrides(s.shape)
        var values = [Float](repeating: 0, count: s.count)
        switch array.dataType {
        case .float32 where contiguous:
            let p = array.dataPointer.bindMemory(to: Float.self, capacity: s.count)
            values.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: p, count: s.count) }
        case .float16 where contiguous:
            let p = array.dataPointer.bindMemory(to: Float16.self, capacity: s.count)
            for i in 0..<s.count { values[i] = Float(p[i]) }
        default:
            for i in 0..<s.count { values[i] = array[i].floatValue }
        }
        if s.dtype == .int64 { return .int64(values: values.map { Int64($0) }, shape: s.shape) }
        return .float(values: values, shape: s.shape)
    }
}
/// The compiled models (.mlmodelc) of one build, in the app's Caches at BuildChecks.compiledCachePath: keyed by
/// the build's manifest sha256, so a new build never reuses an old build's model and a relaunch reuses its own.
/// Written atomically: Core ML compiles into its own temporary folder, the result is moved next to the cache
/// entry under a unique name and renamed into place; a cached model that is missing or does not load is compiled
/// again.
@available(iOS 18.0, macOS 15.0, *)
public final class CoreMLCompiledCache {
    public let folder: URL
    public let caches: URL
    private let lock = NSLock()

    /// `caches`: the app's Caches folder (FileManager's .cachesDirectory).
    public init(folder: URL, caches: URL) {
        self.folder = folder
        self.caches = caches
    }

    /// Where the compiled package of the build's graph `graph` is cached (graphs of one multifunction package share
    /// it: the entry is named by the package, BuildChecks.compiledCachePath).
    public func compiledURL(graph: String) throws -> URL {
        try BuildChecks.compiledCachePath(folder: folder, caches: caches, graph: graph)
    }

    /// Loads `package` with `configuration` from its compiled copy, compiling it first when there is none or the
    /// cached one cannot be loaded (a crash mid-write leaves no half folder under the final name, but a user or the
    /// system may have removed files of it).
    func load(graph: String, package: String, configuration: MLModelConfiguration) throws -> MLModel {
        lock.lock()
        defer { lock.unlock() }
        let compiled = try compiledURL(graph: graph)
        if FileManager.default.fileExists(atPath: compiled.path),
           let model = try? MLModel(contentsOf: compiled, configuration: configuration) {
            return model
        }
        try compile(folder.appendingPathComponent(package), to: compiled)
        do {
            return try MLModel(contentsOf: compiled, configuration: configuration)
        } catch {
            throw MiniVLMError(.runtime, "Core ML cannot load \(configuration.functionName ?? "the model") of \(package): \(error.localizedDescription)")
        }
    }

    private func compile(_ package: URL, to compiled: URL) throws {
        let files = FileManager.default
        let parent = compiled.deletingLastPathComponent()
        let staging = parent.appendingPathComponent(".\(compiled.lastPathComponent).\(UUID().uuidString).partial")
        do {
            try files.createDirectory(at: parent, withIntermediateDirectories: true)
            let temporary = try MLModel.compileModel(at: package)
            defer { try? files.removeItem(at: temporary) }
            // Same folder as the final name, so the last step is a rename (a copy when Core ML's temporary folder
            // is on another volume happens here, under the staging name).
            try files.moveItem(at: temporary, to: staging)
            if files.fileExists(atPath: compiled.path) { try files.removeItem(at: compiled) }  // a corrupt entry
            try files.moveItem(at: staging, to: compiled)
        } catch {
            try? files.removeItem(at: staging)
            throw MiniVLMError(.runtime, "Core ML cannot compile \(package.lastPathComponent) into \(parent.path): \(error.localizedDescription)")
        }
    }
}
#endif
