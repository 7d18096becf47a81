// Graph runners: the host side of one exported graph. Core ML (.mlpackage), Core AI (.aimodel) and ExecuTorch
// (.pte) implement GraphRunner; tests replay recorded golden calls through the same protocol.

import Foundation

/// A host tensor: float32 or int64 values in C order and their shape (the manifest's graph dtypes; a runner
/// converts to its runtime's own dtypes at its edge).
public enum HostTensor {
    case float(values: [Float], shape: [Int])
    case int64(values: [Int64], shape: [Int])

    public var shape: [Int] {
        switch self {
        case .float(_, let shape), .int64(_, let shape): return shape
        }
    }

    public var dtype: DType {
        switch self {
        case .float: return .float32
        case .int64: return .int64
        }
    }

    public func floats() throws -> [Float] {
        guard case .float(let values, _) = self else { throw MiniVLMError(.runtime, "expected a float32 tensor, got \(dtype)") }
        return values
    }

    public func int64s() throws -> [Int64] {
        guard case .int64(let values, _) = self else { throw MiniVLMError(.runtime, "expected an int64 tensor, got \(dtype)") }
        return values
    }
}

public protocol GraphRunner: AnyObject {
    var name: String { get }
    var spec: GraphSpec { get }
    /// Inputs and outputs by manifest name, batch 1 as exported.
    func run(_ inputs: [String: HostTensor]) throws -> [String: HostTensor]
}

/// Opens the runner of one graph of a build folder.
public typealias GraphBackend = (_ folder: URL, _ name: String, _ spec: GraphSpec) throws -> GraphRunner

extension GraphRunner {
    /// A clear error for a wrong input instead of a runtime failure.
    func checkInputs(_ inputs: [String: HostTensor]) throws {
        for s in spec.inputs {
            guard let t = inputs[s.name] else { throw MiniVLMError(.invalidArgument, "graph \(name): missing input '\(s.name)'") }
            if t.shape != s.shape || t.dtype != s.dtype {
                throw MiniVLMError(.invalidArgument, "graph \(name): input '\(s.name)' is \(t.dtype)\(t.shape), expected \(s.dtype)\(s.shape)")
            }
        }
    }

    /// A batch of `batch` examples along each tensor's manifest batch_axis: `batch` single calls, outputs
    /// concatenated (beam search), as sdk/runtime.py does.
    func runBatched(_ inputs: [String: HostTensor], batch: Int) throws -> [String: HostTensor] {
        if batch == 1 { return try run(inputs) }
        var parts: [[String: HostTensor]] = []
        for i in 0..<batch {
            var one: [String: HostTensor] = [:]
            for s in spec.inputs {
                guard let t = inputs[s.name] else { throw MiniVLMError(.invalidArgument, "graph \(name): missing input '\(s.name)'") }
                one[s.name] = slice(t, axis: s.batchAxis, index: i, batch: batch)
            }
            parts.append(try run(one))
        }
        var out: [String: HostTensor] = [:]
        for s in spec.outputs {
            out[s.name] = try concat(parts.map { part in
                guard let t = part[s.name] else { throw MiniVLMError(.runtime, "graph \(name) returned no '\(s.name)'") }
                return t
            }, axis: s.batchAxis)
        }
        return out
    }
}

private func sliceValues<T>(_ values: [T], shape: [Int], axis: Int, index: Int, batch: Int) -> [T] {
    let outer = shape[..<axis].reduce(1, *)
    let inner = shape[(axis + 1)...].reduce(1, *)
    var out: [T] = []
    out.reserveCapacity(outer * inner)
    for o in 0..<outer {
        let start = (o * batch + index) * inner
        out.append(contentsOf: values[start..<(start + inner)])
    }
    return out
}

func slice(_ t: HostTensor, axis: Int, index: Int, batch: Int) -> HostTensor {
    var shape = t.shape
    shape[axis] = 1
    switch t {
    case .float(let v, let s): return .float(values: sliceValues(v, shape: s, axis: axis, index: index, batch: batch), shape: shape)
    case .int64(let v, let s): return .int64(values: sliceValues(v, shape: s, axis: axis, index: index, batch: batch), shape: shape)
    }
}

func concat(_ parts: [HostTensor], axis: Int) throws -> HostTensor {
    guard let first = parts.first else { throw MiniVLMError(.invalidArgument, "nothing to concatenate") }
    var shape = first.shape
    shape[axis] = parts.count
    let outer = first.shape[..<axis].reduce(1, *)
    let inner = first.shape[axis...].reduce(1, *)
    func join<T>(_ arrays: [[T]]) -> [T] {
        var out: [T] = []
        out.reserveCapacity(arrays.count * outer * inner)
        for o in 0..<outer {
            for a in arrays { out.append(contentsOf: a[(o * inner)..<((o + 1) * inner)]) }
        }
        return out
    }
    switch first {
    case .float: return .float(values: join(try parts.map { try $0.floats() }), shape: shape)
    case .int64: return .int64(values: join(try parts.map { try $0.int64s() }), shape: shape)
    }
}

/// The row-major strides (in elements) of a contiguous array of `shape`.
func contiguousStrides(_ shape: [Int]) -> [Int] {
    var strides = [Int](repeating: 1, count: shape.count)
    for i in stride(from: shape.count - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * shape[i + 1] }
    return strides
}
