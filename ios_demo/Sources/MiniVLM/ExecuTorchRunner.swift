// Runs one .pte graph of a `--target executorch` build with ExecuTorch's Swift API (package "executorch",
// products executorch + backend_xnnpack / backend_coreml + kernels). Method "forward", inputs and outputs in
// manifest order. The graphs of a build read their constants from its one weights file (manifest
// `weights_file`, a .ptd), passed as the Module's data file (ExecuTorchModule.h initWithFilePath:dataFilePaths:).

#if canImport(ExecuTorch)
import ExecuTorch
import Foundation

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
                values.append(Value(Tensor<Int32>(v.map { Int32(truncatingIfNeeded: $0) }, shape: s.shape)))
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
