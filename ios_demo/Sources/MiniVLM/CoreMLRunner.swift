// Runs one graph of a `--target coreml` build with Core ML: the build is one multifunction .mlpackage with one
// function per graph (the manifest's graphs.<name>.function), which needs iOS 18 / macOS 15. Inputs and outputs
// are addressed by the manifest's runtime_name and converted to its runtime_dtype (int32 token ids; float16
// outputs of an fp16 ML program are widened to float32 for the host steps).

#if canImport(CoreML)
import CoreML
import Foundation

@available(iOS 18.0, macOS 15.0, *)
public final class CoreMLRunner: GraphRunner {
    public let name: String
    public let spec: GraphSpec
    private let model: MLModel

    /// The manifest's `compute_units` (nil: "all") as Core ML's; converters/coreml.py converts with the same choice.
    static func computeUnits(_ name: String?) throws -> MLComputeUnits {
        switch name ?? "all" {
        case "all": return .all
        case "cpu_and_ne": return .cpuAndNeuralEngine
        case "cpu_and_gpu": return .cpuAndGPU
        case "cpu_only": return .cpuOnly
        case let other:
            throw MiniVLMError(.badFile, "the manifest's compute_units is '\(other)', expected all, cpu_and_ne, cpu_and_gpu or cpu_only")
        }
    }

    /// Compiles the .mlpackage (cached next to it as .mlmodelc after the first run; every graph's runner shares
    /// it) and loads the graph's function from it.
    public init(folder: URL, name: String, spec: GraphSpec, computeUnits: MLComputeUnits = .all) throws {
        self.name = name
        self.spec = spec
        guard let function = spec.function else {
            throw MiniVLMError(.badFile, "the manifest's graph '\(name)' names no function of \(spec.file)")
        }
        let package = folder.appendingPathComponent(spec.file)
        let compiled = package.deletingPathExtension().appendingPathExtension("mlmodelc")
        do {
            if !FileManager.default.fileExists(atPath: compiled.path) {
                let temporary = try MLModel.compileModel(at: package)
                try FileManager.default.moveItem(at: temporary, to: compiled)
            }
            let configuration = MLModelConfiguration()
            configuration.computeUnits = computeUnits
            configuration.functionName = function
            model = try MLModel(contentsOf: compiled, configuration: configuration)
        } catch {
            throw MiniVLMError(.runtime, "Core ML cannot load function \(function) of \(spec.file): \(error.localizedDescription)")
        }
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
#endif
