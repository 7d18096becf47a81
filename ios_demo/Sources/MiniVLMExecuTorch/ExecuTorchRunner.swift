// Runs one .pte graph of a `--target executorch` build with ExecuTorch's Swift API (package "executorch",
// products executorch + backend_xnnpack / backend_coreml + kernels). Method "forward", inputs and outputs in
// manifest order. The graphs of a build read their constants from its one weights file (manifest
// `weights_file`, a .ptd), passed as the Module's data file (ExecuTorchModule.h initWithFilePath:dataFilePaths:).
//
// This file is the MiniVLMExecuTorch product: an app that links it calls `ExecuTorchBackend.register()` once, and
// Backends then opens executorch builds; an app without it never links ExecuTorch.

#if canImport(ExecuTorch)
import CMiniVLMExecuTorch
import ExecuTorch
import Foundation
import MiniVLM

/// Makes `Backends` open `--target executorch` builds with ExecuTorchRunner.
public enum ExecuTorchBackend {
    /// The ExecuTorch runtime this package links (Package.swift's "swiftpm-<version>" branch): a build exported by a
    /// newer executorch is refused at load (BuildChecks.verify).
    public static let runtimeVersion = "1.5.1"

    /// Registers the runner; call once before `Backends.open` (e.g. in the app's init).
    public static func register() {
        Backends.register(executorch: ExecuTorchHooks(
            runtimeVersion: runtimeVersion,
            setThreads: { threads in Int(cmvlm_executorch_set_threads(UInt32(clamping: max(threads, 0)))) },
            makeRunner: { folder, name, spec, weightsFile in
                try ExecuTorchRunner(folder: folder, name: name, spec: spec, weightsFile: weightsFile)
            }
        ))
    }
}

public final class ExecuTorchRunner: GraphRunner {
    public let name: String
    public let spec: GraphSpec
    private let module: Module

    public init(folder: URL, name: String, spec: GraphSpec, weightsFile: String?) throws {
        self.name = name
        self.spec = spec
        let data = weightsFile.map { [folder.appendingPathComponent($0).path] } ?? []
        module = Module(filePath: folder.appendingPathComponent(spec.file).path, dataFilePaths: data)
        do {
            try module.load("forward")
        } catch {
            throw MiniVLMError(.runtime, "ExecuTorch cannot load \(spec.file): \(error.localizedDescription)")
        }
    }

    public func run(_ inputs: [String: HostTensor]) throws -> [String: HostTensor] {
        var values: [Value] = []
        for s in spec.inputs {
            guard let t = inputs[s.name] else { throw MiniVLMError(.invalidArgument, "\(name): missing input '\(s.name)'") }
            switch (t, s.runtimeDtype) {
            case (.float(let v, _), _):
                values.append(Value(Tensor<Float>(v, shape: s.shape)))
            case (.int64(let v, _), .int32):
                let narrow = try v.map { x -> Int32 in
                    guard let n = Int32(exactly: x) else { throw MiniVLMError(.invalidArgument, "\(s.name): \(x) does not fit int32") }
                    return n
                }
                values.append(Value(Tensor<Int32>(narrow, shape: s.shape)))
            case (.int64(let v, _), _):
                values.append(Value(Tensor<Int64>(v, shape: s.shape)))
            }
        }
        let outputs: [Value]
        do {
            outputs = try module.forward(values)
        } catch {
            throw MiniVLMError(.runtime, "ExecuTorch \(name) failed: \(error.localizedDescription)")
        }
        guard outputs.count == spec.outputs.count else {
            throw MiniVLMError(.runtime, "\(name) returned \(outputs.count) outputs, the manifest lists \(spec.outputs.count)")
        }
        var result: [String: HostTensor] = [:]
        for (value, s) in zip(outputs, spec.outputs) {
            if s.dtype == .int64, let t: Tensor<Int64> = value.tensor() {
                result[s.name] = .int64(values: t.scalars(), shape: s.shape)
            } else if let t: Tensor<Float> = value.tensor() {
                let scalars = t.scalars()
                guard scalars.count == s.count else {
                    throw MiniVLMError(.runtime, "\(name) output \(s.name) has \(scalars.count) values, expected \(s.shape)")
                }
                result[s.name] = .float(values: scalars, shape: s.shape)
            } else {
                throw MiniVLMError(.runtime, "\(name) output \(s.name) is not a \(s.dtype) tensor")
            }
        }
        return result
    }
}
#endif
