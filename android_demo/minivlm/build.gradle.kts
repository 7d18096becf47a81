// The `minivlm` Android library: Kotlin API (ai.minivlm.MiniVlm) over the native core through JNI, with
// ExecuTorch and LiteRT graph runners.
//
// Sources:
//   src/common/kotlin  platform-independent Kotlin (JDK only): pipeline, manifest, JNI declarations, golden
//                      replay. CI compiles these with plain kotlinc (tests/apps/test_android_jvm.py).
//   src/main/kotlin    Android-only: runners (ExecuTorch, LiteRT), assets install, Bitmap conversion.
//   src/main/cpp       the JNI bridge; CMake builds it together with ../../sdk/native (the core).
//   src/jvmTest/kotlin the JVM golden test main, run by CI (not part of the AAR).
plugins {
    alias(libs.plugins.android.library)
    alias(libs.plugins.kotlin.android)
}

android {
    namespace = "ai.minivlm"
    compileSdk = 35
    ndkVersion = "27.2.12479018"

    defaultConfig {
        minSdk = 26
        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
        externalNativeBuild {
            cmake {
                arguments += listOf("-DANDROID_STL=c++_shared")
                cppFlags += listOf("-std=c++17")
            }
        }
        consumerProguardFiles("consumer-rules.pro")
    }

    externalNativeBuild {
        cmake {
            path = file("src/main/cpp/CMakeLists.txt")
            version = "3.22.1"
        }
    }

    sourceSets {
        getByName("main") {
            java.srcDir("src/common/kotlin")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    implementation(libs.executorch.android)
    implementation(libs.litert)
}
