// Owns the opened build and runs it off the main thread; publishes what the UI shows. Every failure becomes one
// line in the UI, never a crash.

import MiniVLM
#if canImport(MiniVLMExecuTorch)
import MiniVLMExecuTorch
#endif
import SwiftUI
import UIKit

struct QA: Identifiable {
    let id = UUID()
    let question: String
    let answer: String
    let timings: Timings
}

/// A bundled build folder (a folder reference holding manifest.json).
struct BundledBuild: Identifiable, Hashable {
    let name: String
    let url: URL
    var id: String { name }
}

/// A demo scene of Resources/Scenes: its PNG and the caption the scene grammar gives it.
struct DemoScene: Identifiable, Hashable {
    let file: String
    let url: URL
    let caption: String?
    var id: String { file }
}

/// The image features of either family, computed once per photo.
enum Encoded {
    case miniVLM(Analysis)
    case efficientVLM(EncodedImage)
}

/// The Core ML / Core AI compute-unit choices offered in the UI (the runtime plan resolves "auto").
let computeUnitChoices: [ComputeUnitsChoice] = [.auto, .all, .cpuOnly, .cpuAndGPU, .cpuAndNeuralEngine]

@MainActor
final class DemoModel: ObservableObject {
    @Published var status = "Loading the model…"
    @Published var busy = true
    @Published var builds: [BundledBuild] = []
    @Published var scenes: [DemoScene] = []
    @Published var selectedBuild: BundledBuild?
    @Published var options = RuntimeOptions()
    /// "minivlm · coreml · fp16", the applied runtime plan, and the load / warm-up times.
    @Published var modelInfo = ""
    @Published var planInfo = ""
    @Published var loadInfo = ""
    @Published var target = ""
    @Published var image: UIImage?
    @Published var detections: [Detection] = []
    @Published var encoded: Encoded?
    @Published var caption: String?
    @Published var referenceCaption: String?
    @Published var stages: [(name: String, ms: Double)] = []
    @Published var answers: [QA] = []

    /// One opened build, used from one background queue at a time (graph runtimes keep per-call state).
    private var opened: OpenedBuild?
    private let queue = DispatchQueue(label: "minivlm.pipeline", qos: .userInitiated)

    init() {
        #if canImport(MiniVLMExecuTorch)
        ExecuTorchBackend.register()
        #endif
        builds = Self.bundledBuilds()
        scenes = Self.bundledScenes()
        selectedBuild = builds.first
        load()
    }

    /// Opens the selected build with the chosen runtime options, then runs it once to time the warm-up.
    func load() {
        guard let build = selectedBuild else {
            busy = false
            status = "No model build in the app: copy one to ios_demo/App/minivlm (see ios_demo/README.md)"
            return
        }
        busy = true
        opened = nil
        clearResults()
        status = "Loading \(build.name)…"
        let options = self.options
        queue.async { [weak self] in
            let result = Result { () -> (OpenedBuild, Double) in
                let opened = try Backends.open(folder: build.url, options: options)
                return (opened, try opened.warmUp())
            }
            Task { @MainActor in
                guard let self else { return }
                self.busy = false
                switch result {
                case .success(let (opened, warmUpMs)):
                    self.opened = opened
                    self.target = opened.target
                    self.modelInfo = "\(opened.family) · \(opened.target) · \(opened.precision)"
                    self.planInfo = opened.planDescription
                    self.loadInfo = String(format: "load %.0f ms · first run %.0f ms", opened.loadMs, warmUpMs)
                    self.status = "Take a photo, pick one, or open a demo scene"
                case .failure(let error):
                    self.modelInfo = ""
                    self.planInfo = ""
                    self.loadInfo = ""
                    self.status = "Cannot load \(build.name): \(oneLine(error))"
                }
            }
        }
    }

    /// A photo's encoded bytes (library), decoded downscaled to what the build needs.
    func analyze(data: Data, referenceCaption: String? = nil) {
        guard let opened else { return }
        clearResults()
        self.referenceCaption = referenceCaption
        busy = true
        status = "Running…"
        queue.async { [weak self] in
            let result = Result { () -> (CGImage, Encoded, [Detection], Caption, Timings) in
                let cgImage = try PhotoDecoding.downscaled(data, for: opened.folder)
                let pixels = try PixelImage(cgImage: cgImage)
                var timings = Timings()
                switch opened.model {
                case .miniVLM(let pipeline):
                    let analysis = try pipeline.analyze(pixels)
                    let (caption, captionTimings) = try pipeline.caption(analysis)
                    analysis.timings.stages.forEach { timings.add($0.name, $0.ms) }
                    captionTimings.stages.forEach { timings.add($0.name, $0.ms) }
                    return (cgImage, .miniVLM(analysis), analysis.detections, caption, timings)
                case .efficientVLM(let pipeline):
                    let (encoding, encodeTimings) = try pipeline.encode(pixels)
                    let (caption, captionTimings) = try pipeline.caption(encoding)
                    encodeTimings.stages.forEach { timings.add($0.name, $0.ms) }
                    captionTimings.stages.forEach { timings.add($0.name, $0.ms) }
                    return (cgImage, .efficientVLM(encoding), [], caption, timings)
                }
            }
            Task { @MainActor in
                guard let self else { return }
                self.busy = false
                switch result {
                case .success(let (cgImage, encoded, detections, caption, timings)):
                    self.image = UIImage(cgImage: cgImage)
                    self.encoded = encoded
                    self.detections = detections
                    self.caption = caption.text
                    self.stages = timings.stages
                    let found = opened.family == "minivlm" ? "\(detections.count) objects · " : ""
                    self.status = found + String(format: "%.0f ms", timings.totalMs)
                case .failure(let error):
                    self.status = "Failed: \(oneLine(error))"
                }
            }
        }
    }

    /// A camera photo: re-encoded once so that ImageIO decodes it downscaled like a library photo (the picker hands
    /// over a decoded full-resolution image, whose orientation the JPEG keeps).
    func analyze(cameraImage: UIImage) {
        guard let data = cameraImage.jpegData(compressionQuality: 0.95) else {
            status = "Failed: the camera photo cannot be encoded"
            return
        }
        analyze(data: data)
    }

    func open(_ scene: DemoScene) {
        do {
            analyze(data: try Data(contentsOf: scene.url), referenceCaption: scene.caption)
        } catch {
            status = "Cannot read \(scene.file): \(oneLine(error))"
        }
    }

    /// The answer to `question` (VQA head) about the current photo.
    func ask(_ question: String) {
        run(question) { opened, encoded in
            switch (opened.model, encoded) {
            case (.miniVLM(let pipeline), .miniVLM(let analysis)):
                return try pipeline.answer(analysis, question: question)
            case (.efficientVLM(let pipeline), .efficientVLM(let encoding)):
                return try pipeline.answer(encoding, question: question)
            default:
                throw MiniVLMError(.config, "the photo was encoded by another model; pick it again")
            }
        }
    }

    /// How well `text` describes the current photo (match head), as a probability.
    func match(_ text: String) {
        run("match: \(text)") { opened, encoded in
            let scored: (Float, Timings)
            switch (opened.model, encoded) {
            case (.miniVLM(let pipeline), .miniVLM(let analysis)):
                scored = try pipeline.match(analysis, text: text)
            case (.efficientVLM(let pipeline), .efficientVLM(let encoding)):
                scored = try pipeline.match(encoding, text: text)
            default:
                throw MiniVLMError(.config, "the photo was encoded by another model; pick it again")
            }
            return (String(format: "match %.3f", scored.0), scored.1)
        }
    }

    private func run(_ question: String, _ body: @escaping (OpenedBuild, Encoded) throws -> (String, Timings)) {
        guard let opened, let encoded, !question.trimmingCharacters(in: .whitespaces).isEmpty else { return }
        busy = true
        queue.async { [weak self] in
            let result = Result { try body(opened, encoded) }
            Task { @MainActor in
                guard let self else { return }
                self.busy = false
                switch result {
                case .success(let (answer, timings)):
                    self.answers.insert(QA(question: question, answer: answer, timings: timings), at: 0)
                case .failure(let error):
                    self.answers.insert(QA(question: question, answer: "error: \(oneLine(error))", timings: Timings()), at: 0)
                }
            }
        }
    }

    private func clearResults() {
        image = nil
        encoded = nil
        detections = []
        caption = nil
        referenceCaption = nil
        stages = []
        answers = []
    }

    /// Every folder reference of the bundle that holds a manifest.json: "minivlm" and any under "builds".
    static func bundledBuilds() -> [BundledBuild] {
        guard let resources = Bundle.main.resourceURL else { return [] }
        var found: [BundledBuild] = []
        let single = resources.appendingPathComponent("minivlm")
        if FileManager.default.fileExists(atPath: single.appendingPathComponent("manifest.json").path) {
            found.append(BundledBuild(name: "minivlm", url: single))
        }
        let many = resources.appendingPathComponent("builds")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: many.path)) ?? []
        for name in names.sorted() {
            let url = many.appendingPathComponent(name)
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("manifest.json").path) {
                found.append(BundledBuild(name: name, url: url))
            }
        }
        return found
    }

    /// The scenes listed by Scenes/scenes.json (file names and reference captions), or every PNG of the folder.
    static func bundledScenes() -> [DemoScene] {
        guard let folder = Bundle.main.resourceURL?.appendingPathComponent("Scenes"),
              FileManager.default.fileExists(atPath: folder.path) else { return [] }
        return SceneIndex.scenes(in: folder)
    }
}

/// Reads Scenes/scenes.json: a list of entries, or an object with a "scenes" list; each entry names its "file"
/// (or "image") and its reference "caption". Without an index, every PNG of the folder is a scene.
enum SceneIndex {
    static func scenes(in folder: URL) -> [DemoScene] {
        let index = folder.appendingPathComponent("scenes.json")
        if let data = try? Data(contentsOf: index), let json = try? JSONSerialization.jsonObject(with: data) {
            let entries = (json as? [[String: Any]]) ?? ((json as? [String: Any])?["scenes"] as? [[String: Any]]) ?? []
            let scenes = entries.compactMap { entry -> DemoScene? in
                guard let file = (entry["file"] ?? entry["image"]) as? String else { return nil }
                let url = folder.appendingPathComponent(file)
                guard FileManager.default.fileExists(atPath: url.path) else { return nil }
                return DemoScene(file: file, url: url, caption: entry["caption"] as? String)
            }
            if !scenes.isEmpty { return scenes }
        }
        let files = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return files.filter { $0.lowercased().hasSuffix(".png") }.sorted().map {
            DemoScene(file: $0, url: folder.appendingPathComponent($0), caption: nil)
        }
    }
}

/// An error as one line of the UI: MiniVLM's own message, else the system's description, first line only.
func oneLine(_ error: Error) -> String {
    let text = (error as? MiniVLMError)?.message ?? error.localizedDescription
    return text.split(whereSeparator: \.isNewline).first.map(String.init) ?? "unknown error"
}
