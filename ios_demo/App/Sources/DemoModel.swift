// Owns the pipeline and runs it off the main thread; publishes what the UI shows.

import MiniVLM
import SwiftUI
import UIKit

struct QA: Identifiable {
    let id = UUID()
    let question: String
    let answer: String
    let timings: Timings
}

@MainActor
final class DemoModel: ObservableObject {
    @Published var status = "Loading the model…"
    @Published var modelInfo = ""
    @Published var busy = true
    @Published var image: UIImage?
    @Published var analysis: Analysis?
    @Published var caption: String?
    @Published var stages: [(name: String, ms: Double)] = []
    @Published var answers: [QA] = []

    /// One pipeline, used from one background queue at a time (graph runtimes keep per-call state).
    private var pipeline: Pipeline?
    private let queue = DispatchQueue(label: "minivlm.pipeline", qos: .userInitiated)

    init() {
        queue.async { [weak self] in
            let result = Result { () -> Pipeline in
                guard let folder = Bundle.main.url(forResource: "minivlm", withExtension: nil) else {
                    throw MiniVLMError(.ioError, "no build folder 'minivlm' in the app bundle; see ios_demo/README.md")
                }
                return try Backends.open(folder: folder)
            }
            Task { @MainActor in
                guard let self else { return }
                self.busy = false
                switch result {
                case .success(let pipeline):
                    self.pipeline = pipeline
                    let s = pipeline.spec
                    self.modelInfo = "\(s.target) · \(s.delegate ?? "default") · \(s.precision) · \(pipeline.config.image_size)² input"
                    self.status = "Take a photo or pick one"
                case .failure(let error):
                    self.status = "Cannot load the model: \(error)"
                }
            }
        }
    }

    func analyze(_ image: UIImage) {
        guard let pipeline, let cgImage = image.uprightCGImage() else { return }
        self.image = image
        analysis = nil
        caption = nil
        stages = []
        answers = []
        busy = true
        status = "Running…"
        queue.async { [weak self] in
            let result = Result { () -> (Analysis, Caption, Timings) in
                let analysis = try pipeline.analyze(try PixelImage(cgImage: cgImage))
                let (caption, timings) = try pipeline.caption(analysis)
                return (analysis, caption, timings)
            }
            Task { @MainActor in
                guard let self else { return }
                self.busy = false
                switch result {
                case .success(let (analysis, caption, captionTimings)):
                    self.analysis = analysis
                    self.caption = caption.text
                    self.stages = analysis.timings.stages + captionTimings.stages
                    let total = self.stages.reduce(0) { $0 + $1.ms }
                    self.status = "\(analysis.detections.count) objects · \(String(format: "%.0f", total)) ms"
                case .failure(let error):
                    self.status = "Failed: \(error)"
                }
            }
        }
    }

    func ask(_ question: String) {
        guard let pipeline, let analysis, !question.trimmingCharacters(in: .whitespaces).isEmpty else { return }
        busy = true
        queue.async { [weak self] in
            let result = Result { try pipeline.answer(analysis, question: question) }
            Task { @MainActor in
                guard let self else { return }
                self.busy = false
                switch result {
                case .success(let (answer, timings)):
                    self.answers.insert(QA(question: question, answer: answer, timings: timings), at: 0)
                case .failure(let error):
                    self.answers.insert(QA(question: question, answer: "error: \(error)", timings: Timings()), at: 0)
                }
            }
        }
    }
}

extension UIImage {
    /// The pixels with the EXIF orientation applied (camera photos are often stored rotated).
    func uprightCGImage() -> CGImage? {
        if imageOrientation == .up, let cgImage { return cgImage }
        let format = UIGraphicsImageRendererFormat()
        format.scale = 1
        return UIGraphicsImageRenderer(size: size, format: format).image { _ in draw(at: .zero) }.cgImage
    }
}
