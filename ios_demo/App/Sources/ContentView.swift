// The one screen: the build and its runtime settings (compute units, threads) with the applied plan and the load
// and warm-up times; camera / photo library / demo scene; the photo with boxes (MiniVLM builds), the caption, a
// question box for answers and match scores, and the latency of each stage.

import MiniVLM
import PhotosUI
import SwiftUI

struct ContentView: View {
    @EnvironmentObject private var model: DemoModel
    @State private var pickerItem: PhotosPickerItem?
    @State private var showCamera = false
    @State private var question = ""

    var body: some View {
        NavigationStack {
            List {
                Section("Model") {
                    if model.builds.count > 1 {
                        Picker("Build", selection: $model.selectedBuild) {
                            ForEach(model.builds) { build in Text(build.name).tag(Optional(build)) }
                        }
                    }
                    Picker("Compute units (Core ML, Core AI)", selection: $model.options.computeUnits) {
                        ForEach(computeUnitChoices, id: \.self) { choice in Text(choice.rawValue).tag(choice) }
                    }
                    Stepper(value: $model.options.threads, in: 0...ProcessInfo.processInfo.activeProcessorCount) {
                        Text("ExecuTorch threads: \(model.options.threads == 0 ? "auto" : String(model.options.threads))")
                    }
                    Button("Load with these settings") { model.load() }.disabled(model.busy)
                    if !model.modelInfo.isEmpty { Text(model.modelInfo).font(.caption) }
                    if !model.planInfo.isEmpty { Text(model.planInfo).font(.caption).foregroundStyle(.secondary) }
                    if !model.loadInfo.isEmpty { Text(model.loadInfo).font(.caption).foregroundStyle(.secondary) }
                }
                Section {
                    HStack {
                        Button("Camera") { showCamera = true }
                            .disabled(model.busy || !UIImagePickerController.isSourceTypeAvailable(.camera))
                        Spacer()
                        PhotosPicker("Photo library", selection: $pickerItem, matching: .images)
                            .disabled(model.busy)
                        if !model.scenes.isEmpty {
                            Spacer()
                            Menu("Demo scene") {
                                ForEach(model.scenes) { scene in
                                    Button(scene.caption ?? scene.file) { model.open(scene) }
                                }
                            }
                            .disabled(model.busy)
                        }
                    }
                    .buttonStyle(.borderless)
                    Text(model.status).font(.callout).lineLimit(2)
                }
                if let image = model.image {
                    Section {
                        BoxesOverlay(image: image, detections: model.detections)
                        if let caption = model.caption { Text("“\(caption)”").font(.headline) }
                        if let reference = model.referenceCaption {
                            Text("scene: “\(reference)”").font(.caption).foregroundStyle(.secondary)
                        }
                    }
                }
                if model.encoded != nil {
                    Section("Questions and matching") {
                        TextField("how many shapes are there?", text: $question)
                            .onSubmit(ask)
                            .submitLabel(.send)
                        HStack {
                            Button("Ask", action: ask).disabled(model.busy || question.isEmpty)
                            Spacer()
                            Button("Match") {
                                model.match(question)
                                question = ""
                            }
                            .disabled(model.busy || question.isEmpty)
                        }
                        .buttonStyle(.borderless)
                        ForEach(model.answers) { qa in
                            VStack(alignment: .leading) {
                                Text("Q: \(qa.question)")
                                Text("A: \(qa.answer)").bold()
                                Text(qa.timings.description).font(.caption2).foregroundStyle(.secondary)
                            }
                        }
                    }
                }
                if !model.stages.isEmpty {
                    Section("Latency per stage") {
                        ForEach(model.stages, id: \.name) { stage in
                            HStack {
                                Text(stage.name).font(.system(.body, design: .monospaced))
                                Spacer()
                                Text(String(format: "%.1f ms", stage.ms)).font(.system(.body, design: .monospaced))
                            }
                        }
                    }
                }
            }
            .navigationTitle("MiniVLM")
        }
        .onChange(of: pickerItem) { _, item in
            guard let item else { return }
            Task {
                do {
                    if let data = try await item.loadTransferable(type: Data.self) {
                        model.analyze(data: data)
                    } else {
                        model.status = "Cannot read that image"
                    }
                } catch {
                    model.status = "Cannot read that image: \(oneLine(error))"
                }
            }
        }
        .sheet(isPresented: $showCamera) {
            CameraPicker { image in model.analyze(cameraImage: image) }
        }
    }

    private func ask() {
        model.ask(question)
        question = ""
    }
}

/// The photo with each detection's box and "label score", boxes given in original-image pixels.
struct BoxesOverlay: View {
    let image: UIImage
    let detections: [Detection]
    private let colors: [Color] = [.red, .blue, .green, .yellow, .purple, .orange]

    var body: some View {
        Image(uiImage: image)
            .resizable()
            .scaledToFit()
            .overlay {
                GeometryReader { geometry in
                    let k = geometry.size.width / image.size.width
                    ForEach(detections) { d in
                        let color = colors[d.id % colors.count]
                        let rect = CGRect(x: CGFloat(d.box[0]) * k, y: CGFloat(d.box[1]) * k,
                                          width: CGFloat(d.box[2] - d.box[0]) * k, height: CGFloat(d.box[3] - d.box[1]) * k)
                        Rectangle()
                            .stroke(color, lineWidth: 2)
                            .frame(width: rect.width, height: rect.height)
                            .position(x: rect.midX, y: rect.midY)
                        Text("\(d.label) \(String(format: "%.2f", d.score))")
                            .font(.caption2.bold())
                            .foregroundStyle(color)
                            .position(x: rect.minX + 40, y: max(rect.minY - 8, 8))
                    }
                }
            }
    }
}
