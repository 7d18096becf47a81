// Runs one graph of a `--target coreai` build with Apple's Core AI framework (iOS 27 / macOS 27). The build is one
// `model.aimodel` asset holding every graph as a named function (the manifest's graphs.<name>.function): the asset
// is loaded, and specialized for the device, once per build (CoreAIModels, shared by every graph's runner), and
// each runner loads its graph's function from it. Inputs and outputs are addressed by the manifest's runtime_name
// and converted to its runtime_dtype (int32 token ids, as in a Core ML build); float16 outputs are widened to
// float32 for the host steps. Each function's inputs and outputs are checked against the manifest when it loads.
//
// Written against Apple's Swift reference for Core AI, https://developer.apple.com/documentation/coreai:
//   AIModel(contentsOf:options:) async throws                      .../coreai/aimodel/init(contentsof:options:)
//   AIModel.loadFunction(named:) throws -> InferenceFunction?, functionNames
//   InferenceFunction.descriptor (inputNames, outputNames, inputDescriptor(of:), outputDescriptor(of:) ->
//     InferenceValue.Descriptor?, case .ndArray(NDArrayDescriptor) with shape and scalarType)
//   InferenceFunction.run(inputs: [String: NDArray]) async throws -> InferenceFunction.Outputs
//                                                                  .../coreai/inferencefunction/run(inputs:states:outputviews:)-mqfb
//   InferenceFunction.Outputs.remove(_:) -> InferenceValue?, InferenceValue.ndArray
//   NDArray(shape:scalarType:) (contiguous, row-major), mutableView(as:), view(as:), NDArray.View.withUnsafePointer;
//   MutableView.withUnsafeMutablePointer is named in .../coreai/ndarray/init(descriptor:) without its signature: its
//   closure is taken to receive (pointer, shape, strides) as View.withUnsafePointer's does
//   SpecializationOptions.default / .cpuOnly / init(preferredComputeUnitKind:), ComputeUnitKind
// No Swift toolchain was at hand where this was written: it has been parsed, not compiled (ios_demo/README.md).

#if canImport(CoreAI)
import CoreAI
import Foundation

/// The Core AI model assets of one build, each loaded and specialized once and shared by the runners of all its
/// graphs (a Core AI build has one, `model.aimodel`).
@available(iOS 27.0, macOS 27.0, *)
public final class CoreAIModels {
    public let options: SpecializationOptions
    private var models: [String: AIModel] = [:]
    private let lock = NSLock()

    /// `computeUnits` is the runtime plan's (or the manifest's) `compute_units` (nil: "default"), in Core AI's names
    /// or in the plan's Core ML names (`unitName(plan:)`).
    public init(computeUnits: String?) throws {
        options = try Self.specializationOptions(computeUnits.map(Self.unitName(plan:)))
    }

    /// A runtime plan's compute units in Core AI's names: the plan may name Core ML's allowed sets ("all",
    /// "cpu_and_ne", "cpu_and_gpu"), of which Core AI takes the preferred unit; "auto" lets Core AI choose.
    static func unitName(plan name: String) -> String {
        switch name {
        case "auto", "all": return "default"
        case "cpu_and_ne": return "neural_engine"
        case "cpu_and_gpu": return "gpu"
        default: return name  // already a Core AI name, or refused by specializationOptions
        }
    }

    /// The manifest's `compute_units` (converters/targets.py, as sdk/coreai_runtime.py maps them) as specialization
    /// options. "neural_engine" and "gpu" are preferences: an operation the preferred unit cannot run still falls
    /// back to another unit (.../coreai/specializationoptions/preferredcomputeunitkind); "cpu_only" is the one
    /// restriction, "default" lets Core AI choose.
    static func specializationOptions(_ computeUnits: String?) throws -> SpecializationOptions {
        switch computeUnits ?? "default" {
        case "default": return .default
        case "neural_engine": return SpecializationOptions(preferredComputeUnitKind: .neuralEngine)
        case "gpu": return SpecializationOptions(preferredComputeUnitKind: .gpu)
        case "cpu_only": return .cpuOnly
        case let other:
            throw MiniVLMError(.badFile, "the manifest's compute_units is '\(other)', expected default, neural_engine, gpu or cpu_only")
        }
    }

    /// The asset at `url`: specialized on its first load on a device (Core AI caches the result), loaded once here.
    func model(at url: URL) throws -> AIModel {
        lock.lock()
        defer { lock.unlock() }
        if let model = models[url.path] { return model }
        let options = self.options
        let model: AIModel
        do {
            model = try blocking { try await AIModel(contentsOf: url, options: options) }
        } catch {
            throw MiniVLMError(.runtime, "Core AI cannot load \(url.lastPathComponent): \(error.localizedDescription)")
        }
        models[url.path] = model
        return model
    }
}

@available(iOS 27.0, macOS 27.0, *)
public final class CoreAIRunner: GraphRunner {
    public let name: String
    public let spec: GraphSpec
    private let function: InferenceFunction

    /// Loads the graph's function from the build's asset (through `models`, which loads each asset once) and checks
    /// its inputs and outputs against the manifest.
    public init(models: CoreAIModels, folder: URL, name: String, spec: GraphSpec) throws {
        self.name = name
        self.spec = spec
        guard let functionName = spec.function else {
            throw MiniVLMError(.badFile, "the manifest's graph '\(name)' names no function of \(spec.file)")
        }
        let model = try models.model(at: folder.appendingPathComponent(spec.file))
        let found: InferenceFunction?
        do {
            found = try model.loadFunction(named: functionName)
        } catch {
            throw MiniVLMError(.runtime, "Core AI cannot load function \(functionName) of \(spec.file): \(error.localizedDescription)")
        }
        guard let loaded = found else {
            throw MiniVLMError(.badFile, "\(spec.file) has no function '\(functionName)'; it has \(model.functionNames)")
        }
        function = loaded
        try Self.check(loaded.descriptor, spec, name)
    }

    public func run(_ inputs: [String: HostTensor]) throws -> [String: HostTensor] {
        var arrays: [String: NDArray] = [:]
        for s in spec.inputs {
            guard let t = inputs[s.name] else { throw MiniVLMError(.invalidArgument, "\(name): missing input '\(s.name)'") }
            arrays[s.runtimeName] = try Self.ndArray(t, s)
        }
        let function = self.function, named = arrays, runtimeNames = spec.outputs.map(\.runtimeName)
        let returned: [String: NDArray]
        do {
            returned = try blocking {
                var outputs = try await function.run(inputs: named)
                var byName: [String: NDArray] = [:]
                for runtimeName in runtimeNames {
                    if let array = outputs.remove(runtimeName)?.ndArray { byName[runtimeName] = array }
                }
                return byName
            }
        } catch {
            throw MiniVLMError(.runtime, "Core AI \(name) failed: \(error.localizedDescription)")
        }
        var outputs: [String: HostTensor] = [:]
        for s in spec.outputs {
            guard let array = returned[s.runtimeName] else {
                throw MiniVLMError(.runtime, "Core AI \(name) returned no '\(s.runtimeName)'")
            }
            outputs[s.name] = try Self.hostTensor(array, s)
        }
        return outputs
    }

    // MARK: the manifest against the function

    /// The function's inputs and outputs must be the manifest's, by runtime name, shape and runtime dtype: a stale or
    /// foreign model.aimodel fails here, naming the difference, rather than at its first call.
    private static func check(_ d: InferenceFunctionDescriptor, _ spec: GraphSpec, _ name: String) throws {
        try checkNames(d.inputNames, spec.inputs, "inputs", name)
        try checkNames(d.outputNames, spec.outputs, "outputs", name)
        for s in spec.inputs { try checkTensor(d.inputDescriptor(of: s.runtimeName), s, "input", name) }
        for s in spec.outputs { try checkTensor(d.outputDescriptor(of: s.runtimeName), s, "output", name) }
    }

    private static func checkNames(_ have: [String], _ specs: [TensorSpec], _ what: String, _ name: String) throws {
        let want = specs.map(\.runtimeName)
        guard Set(have) == Set(want) else {
            throw MiniVLMError(.badFile, "Core AI function \(name) has \(what) \(have.sorted()), the manifest says \(want.sorted())")
        }
    }

    private static func checkTensor(_ descriptor: InferenceValue.Descriptor?, _ s: TensorSpec, _ what: String,
                                    _ name: String) throws {
        guard case .ndArray(let d)? = descriptor else {
            throw MiniVLMError(.badFile, "Core AI function \(name): \(what) '\(s.runtimeName)' is not an array")
        }
        let type = try scalarType(s)
        // -1 marks a dynamic dimension (.../coreai/ndarraydescriptor/shape); the manifest's shapes are the exported ones.
        let shapeMatches = d.shape.count == s.shape.count && zip(d.shape, s.shape).allSatisfy { $0 == $1 || $0 == -1 }
        guard shapeMatches, d.scalarType == type else {
            throw MiniVLMError(.badFile, "Core AI function \(name): \(what) '\(s.runtimeName)' is \(d.scalarType)\(d.shape), the manifest says \(s.runtimeDtype)\(s.shape)")
        }
    }

    /// The Core AI scalar type of a tensor's runtime dtype: the ones this runner converts from and to host tensors.
    private static func scalarType(_ s: TensorSpec) throws -> NDArray.ScalarType {
        switch s.runtimeDtype {
        case .float32: return .float32
        case .float16: return .float16
        case .int32: return .int32
        default:
            throw MiniVLMError(.config, "\(s.name): runtime dtype \(s.runtimeDtype); CoreAIRunner converts float32, float16 and int32")
        }
    }

    // MARK: host tensors <-> NDArray

    private static func ndArray(_ t: HostTensor, _ s: TensorSpec) throws -> NDArray {
        guard t.shape == s.shape else {
            throw MiniVLMError(.invalidArgument, "\(s.name) is \(t.dtype)\(t.shape), expected \(s.dtype)\(s.shape)")
        }
        switch (t, s.runtimeDtype) {
        case (.float(let values, _), .float32):
            return filled(values, .float32, s.shape)
        case (.float(let values, _), .float16):
            return filled(values.map { Float16($0) }, .float16, s.shape)
        case (.int64(let values, _), .int32):
            let narrow = try values.map { v -> Int32 in
                guard let n = Int32(exactly: v) else { throw MiniVLMError(.invalidArgument, "\(s.name): \(v) does not fit int32") }
                return n
            }
            return filled(narrow, .int32, s.shape)
        default:
            throw MiniVLMError(.config, "\(s.name): a \(t.dtype) input with runtime dtype \(s.runtimeDtype) has no Core AI conversion")
        }
    }

    /// A new array of `shape` holding `values` (C order), written through its mutable view's strides.
    private static func filled<T: BitwiseCopyable>(_ values: [T], _ scalarType: NDArray.ScalarType, _ shape: [Int]) -> NDArray {
        var array = NDArray(shape: shape, scalarType: scalarType)
        array.mutableView(as: T.self).withUnsafeMutablePointer { pointer, _, strides in
            if let offsets = stridedOffsets(shape, ints(strides)) {
                for (value, offset) in zip(values, offsets) { pointer[offset] = value }
            } else {
                values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
            }
        }
        return array
    }

    private static func hostTensor(_ array: NDArray, _ s: TensorSpec) throws -> HostTensor {
        guard array.shape == s.shape else {
            throw MiniVLMError(.runtime, "Core AI output \(s.runtimeName) is \(array.shape), the manifest says \(s.shape)")
        }
        switch array.scalarType {
        case .float32:
            return host(try elements(array, Float.self, s), s)
        case .float16:
            return host(try elements(array, Float16.self, s).map { Float($0) }, s)
        case .int32:
            let ints = try elements(array, Int32.self, s)
            return s.dtype == .int64 ? .int64(values: ints.map { Int64($0) }, shape: s.shape)
                                     : .float(values: ints.map { Float($0) }, shape: s.shape)
        default:
            throw MiniVLMError(.runtime, "Core AI output \(s.runtimeName) is \(array.scalarType); CoreAIRunner reads float32, float16 and int32")
        }
    }

    private static func host(_ values: [Float], _ s: TensorSpec) -> HostTensor {
        s.dtype == .int64 ? .int64(values: values.map { Int64($0) }, shape: s.shape) : .float(values: values, shape: s.shape)
    }

    /// The elements of `array` in C order, read through its view's strides (an output's may pad a dimension).
    private static func elements<T: BitwiseCopyable>(_ array: NDArray, _ type: T.Type, _ s: TensorSpec) throws -> [T] {
        // An interleaved layout's strides are block strides (.../coreai/ndarray/view/withunsafepointer(_:)).
        guard array.view(as: type).interleaveLayout == nil else {
            throw MiniVLMError(.runtime, "Core AI output \(s.runtimeName) has an interleaved layout, which CoreAIRunner does not read")
        }
        return array.view(as: type).withUnsafePointer { pointer, shape, strides in
            let dims = ints(shape)
            guard let offsets = stridedOffsets(dims, ints(strides)) else {
                return Array(UnsafeBufferPointer(start: pointer, count: dims.reduce(1, *)))
            }
            return offsets.map { pointer[$0] }
        }
    }

    /// A view's shape or strides as an array.
    private static func ints(_ span: Span<Int>) -> [Int] {
        var values: [Int] = []
        for i in 0..<span.count { values.append(span[i]) }
        return values
    }
}

/// Where each element of a C-order walk over `shape` sits in a buffer laid out with `strides` (in elements); nil
/// when the strides are the contiguous ones, so the caller copies in one go.
private func stridedOffsets(_ shape: [Int], _ strides: [Int]) -> [Int]? {
    if strides == contiguousStrides(shape) { return nil }
    var offsets = [0]
    for (size, stride) in zip(shape, strides) {
        offsets = offsets.flatMap { base in (0..<size).map { base + $0 * stride } }
    }
    return offsets
}

/// Runs Core AI's async `operation` to completion for the synchronous GraphRunner protocol. The pipeline is driven
/// from a dispatch queue (the demo app's DemoModel), not from a Swift concurrency task, so blocking that thread
/// leaves the concurrency pool free to run `operation`.
private func blocking<T>(_ operation: @escaping @Sendable () async throws -> T) throws -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        do { box.result = .success(try await operation()) } catch { box.result = .failure(error) }
        done.signal()
    }
    done.wait()
    return try box.result!.get()
}

private final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, Error>?
}
#endif
