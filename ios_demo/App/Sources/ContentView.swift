// The one screen: camera / photo library buttons, the photo with boxes, the caption, a question box with
// answers, and the latency of each stage.

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
                Section {
                    HStack {
                        Button("Camera") { showCamera = true }
                            .disabled(model.busy || !UIImagePickerController.isSourceTypeAvailable(.camera))
                        Spacer()
                        PhotosPicker("Photo library", selection: $pickerItem, matching: .images)
                            .disabled(model.busy)
                    }
                    Text(model.status).font(.callout)
                    if !model.modelInfo.isEmpty { Text(model.modelInfo).font(.caption).foregroundStyle(.secondary) }
                }
                if let image = model.image {
                    Section {
                        BoxesOverlay(image: image, detections: model.analysis?.detections ?? [])
                        if let caption = model.caption { Text("“\(caption)”").font(.headline) }
                    }
                }
                if model.analysis != nil {
                    Section("Questions") {
                        HStack {
                            TextField("how many shapes are there?", text: $question)
                                .onSubmit(ask)
                                .submitLabel(.send)
                            Button("Ask", action: ask).disabled(model.busy || question.isEmpty)
                        }
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
                if let data = try? await item.loadTransferable(type: Data.self), let image = UIImage(data: data) {
                    model.analyze(image)
                } else {
                    model.status = "Cannot read that image"
                }
            }
        }
        .sheet(isPresented: $showCamera) {
            CameraPicker { image in model.analyze(image) }
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
