// The MiniVLM demo app: pick or take a photo, see boxes, the caption, answers to typed questions and the
// latency of every stage. The model is the build folder bundled as "minivlm" (see ios_demo/README.md).

import SwiftUI

@main
struct MiniVLMDemoApp: App {
    @StateObject private var model = DemoModel()

    var body: some Scene {
        WindowGroup {
            ContentView()
                .environmentObject(model)
        }
    }
}
