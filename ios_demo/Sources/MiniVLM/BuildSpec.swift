// What the app reads from a build folder beyond the host-step constants (which the core reads from the same
// manifest.json): the target, each graph's ordered inputs/outputs, and the answer/attribute vocabularies.

import Foundation

/// The graphs of a MiniVLM build, in pipeline order (python_ref/pipeline.py GRAPH_NAMES).
public let graphNames = ["tee_stage1", "tee_stage2", "caption_prefix", "caption_step", "vqa", "match"]

/// The graphs of an EfficientVLM build (python_ref/efficientvlm/graphs.py GRAPH_NAMES).
public let efficientVLMGraphNames = ["vision", "text_feature", "match", "vqa", "caption_step"]

/// Model family -> its graphs, for manifests that list no `graph_order` (builds before it existed are MiniVLM's).
public let familyGraphNames = ["minivlm": graphNames, "efficientvlm": efficientVLMGraphNames]

/// The model family of the build in `folder` ("minivlm" | "efficientvlm"), from its manifest.json: which pipeline
/// to open it with (`Pipeline` or `EfficientVLMPipeline`).
public func buildFamily(folder: URL) throws -> String {
    struct Fields: Decodable { let family: String? }
    let data: Data
    do {
        data = try Data(contentsOf: folder.appendingPathComponent("manifest.json"))
    } catch {
        throw MiniVLMError(.ioError, "cannot read \(folder.path)/manifest.json: \(error.localizedDescription)")
    }
    do {
        return try checkedFamily(try JSONDecoder().decode(Fields.self, from: data).family)
    } catch let error as DecodingError {
        throw MiniVLMError(.badFile, "manifest.json: \(error)")
    }
}

/// "minivlm" when the manifest names no family (builds before EfficientVLM); `.badFile` for an unknown one.
func checkedFamily(_ family: String?) throws -> String {
    let name = family ?? "minivlm"
    guard familyGraphNames[name] != nil else {
        throw MiniVLMError(.badFile, "manifest family is '\(name.prefix(40))', expected one of \(familyGraphNames.keys.sorted())")
    }
    return name
}

public enum DType: String, Decodable, Sendable {
    case float32, float16, int64, int32, bool, uint8
}

/// One graph input or output as the manifest describes it.
public struct TensorSpec: Decodable, Sendable {
    public let name: String
    public let shape: [Int]
    public let dtype: DType
    public let batchAxis: Int
    public let runtimeName: String
    public let runtimeDtype: DType

    public var count: Int { shape.reduce(1, *) }

    enum CodingKeys: String, CodingKey {
        case name, shape, dtype
        case batchAxis = "batch_axis", runtimeName = "runtime_name", runtimeDtype = "runtime_dtype"
    }

    public init(name: String, shape: [Int], dtype: DType, batchAxis: Int = 0, runtimeName: String? = nil, runtimeDtype: DType? = nil) {
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.batchAxis = batchAxis
        self.runtimeName = runtimeName ?? name
        self.runtimeDtype = runtimeDtype ?? dtype
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        shape = try c.decode([Int].self, forKey: .shape)
        dtype = try c.decode(DType.self, forKey: .dtype)
        batchAxis = try c.decodeIfPresent(Int.self, forKey: .batchAxis) ?? 0
        runtimeName = try c.decodeIfPresent(String.self, forKey: .runtimeName) ?? name
        runtimeDtype = try c.decodeIfPresent(DType.self, forKey: .runtimeDtype) ?? dtype
        if shape.contains(where: { $0 < 1 }) {
            throw MiniVLMError(.badFile, "tensor \(name) has shape \(shape)")
        }
    }
}

public struct GraphSpec: Decodable, Sendable {
    public let file: String
    /// The graph's function in a Core ML build's multifunction package or a Core AI build's model.aimodel; nil for
    /// other targets.
    public let function: String?
    public let inputs: [TensorSpec]
    public let outputs: [TensorSpec]

    public init(file: String, function: String? = nil, inputs: [TensorSpec], outputs: [TensorSpec]) {
        self.file = file
        self.function = function
        self.inputs = inputs
        self.outputs = outputs
    }
}

public struct BuildSpec: Sendable {
    public let target: String
    public let delegate: String?
    public let precision: String
    /// The compute units a Core ML build ("all", "cpu_and_ne", "cpu_and_gpu", "cpu_only") or a Core AI build
    /// ("default", "neural_engine", "gpu", "cpu_only") asks for; nil for other targets.
    public let computeUnits: String?
    public let graphs: [String: GraphSpec]
    public let answers: [String]
    public let attributes: [String]
    /// An ExecuTorch build's one weights file (.ptd), shared by every graph.
    public let weightsFile: String?
    /// "minivlm" | "efficientvlm".
    public let family: String
    /// The build's graphs in pipeline order (manifest graph_order).
    public let graphOrder: [String]
    /// The tokenizer's vocabulary file in the build folder (manifest tokenizer.vocab_file).
    public let vocabFile: String

    private struct TokenizerFields: Decodable {
        let vocab_file: String?
    }

    private struct ManifestFields: Decodable {
        let family: String?
        let graph_order: [String]?
        let tokenizer: TokenizerFields?
        let target: String
        let delegate: String?
        let precision: String
        let compute_units: String?
        let graphs: [String: GraphSpec]
        let vocabularies_file: String?
        let weights_file: String?
    }

    private struct Vocabularies: Decodable {
        let answers: [String]
        let attributes: [String]? // EfficientVLM has no detector, so no attributes
    }

    public init(target: String, delegate: String?, precision: String, graphs: [String: GraphSpec], answers: [String],
                attributes: [String], weightsFile: String? = nil, computeUnits: String? = nil, family: String = "minivlm",
                graphOrder: [String] = graphNames, vocabFile: String = "vocab.txt") {
        self.target = target
        self.delegate = delegate
        self.precision = precision
        self.computeUnits = computeUnits
        self.graphs = graphs
        self.answers = answers
        self.attributes = attributes
        self.weightsFile = weightsFile
        self.family = family
        self.graphOrder = graphOrder
        self.vocabFile = vocabFile
    }

    /// Reads manifest.json and its vocabularies file from `folder`.
    public init(folder: URL) throws {
        do {
            let manifest = try JSONDecoder().decode(ManifestFields.self, from: Data(contentsOf: folder.appendingPathComponent("manifest.json")))
            let vocabFile = folder.appendingPathComponent(manifest.vocabularies_file ?? "vocabularies.json")
            let vocab = try JSONDecoder().decode(Vocabularies.self, from: Data(contentsOf: vocabFile))
            let family = try checkedFamily(manifest.family)
            let order = manifest.graph_order ?? familyGraphNames[family]!
            for name in familyGraphNames[family]! where !order.contains(name) {
                throw MiniVLMError(.badFile, "the manifest's graph_order \(order) lacks the \(family) graph '\(name)'")
            }
            for name in order where manifest.graphs[name] == nil {
                throw MiniVLMError(.badFile, "the manifest has no graph '\(name)'")
            }
            // A Core ML or Core AI build is one model with a function per graph.
            let runtime = ["coreml": "Core ML", "coreai": "Core AI"][manifest.target]
            for name in order where runtime != nil && manifest.graphs[name]?.function == nil {
                throw MiniVLMError(.badFile, "the manifest's graph '\(name)' names no \(runtime!) function; rebuild it with minivlm-convert")
            }
            target = manifest.target
            delegate = manifest.delegate
            precision = manifest.precision
            computeUnits = manifest.compute_units
            graphs = manifest.graphs
            answers = vocab.answers
            attributes = vocab.attributes ?? []
            weightsFile = manifest.weights_file
            self.family = family
            graphOrder = order
            vocabFile = manifest.tokenizer?.vocab_file ?? "vocab.txt"
        } catch let error as MiniVLMError {
            throw error
        } catch let error as DecodingError {
            throw MiniVLMError(.badFile, "manifest.json or its vocabularies: \(error)")
        } catch {
            throw MiniVLMError(.ioError, "cannot read the build in \(folder.path): \(error.localizedDescription)")
        }
    }

    public func graph(_ name: String) throws -> GraphSpec {
        guard let g = graphs[name] else { throw MiniVLMError(.badFile, "the manifest has no graph '\(name)'") }
        return g
    }
}
