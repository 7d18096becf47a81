// The `minivlm` Android library: Kotlin API (ai.minivlm.MiniVlm) over the native core through JNI, with
// ExecuTorch and LiteRT graph runners.
//
// Sources:
//   src/common/kotlin  platform-independent Kotlin (JDK only): pipeline, manifest, JNI declarations, golden
//                      replay. CI compiles these with plain kotlinc (tests/apps/test_android_jvm.py).
//   src/main/kotlin    Android-only: runners (ExecuTorch, LiteRT), assets install, Bitmap conversion.
//   src/main/cpp       the JNI bridge; CMake builds it together with ../../sdk/native (the core).
//   src/jvmTest/kotlin the JVM test mains, run by CI (not part of the AAR).
//   src/androidTest    the on-device golden replay (`./gradlew :minivlm:connectedAndroidTest`): put a build folder
//                      with its golden/ in src/androidTest/assets/golden-build/ (see android_demo/README.md).
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
        testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"
        // The linked runtimes' versions, checked against the manifest's tool versions at load (BuildChecks.verify).
        buildConfigField("String", "EXECUTORCH_VERSION", "\"${libs.versions.executorch.get()}\"")
        buildConfigField("String", "LITERT_VERSION", "\"${libs.versions.litert.get()}\"")
        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
        externalNativeBuild {
            cmake {
                // c++_static: the core exposes only a C ABI, so its libc++ stays private. c++_shared would add a
                // second libc++_shared.so next to the one ExecuTorch's fbjni ships (mergeNativeLibs fails).
                arguments += listOf("-DANDROID_STL=c++_static")
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

    buildFeatures {
        buildConfig = true
    }

    sourceSets {
        getByName("main") {
            java.srcDir("src/common/kotlin")
        }
        getByName("androidTest") {
            java.srcDir("src/androidTest/kotlin")
        }
    }

    androidResources {
        // The replayed build's graphs are copied out of the test APK's assets; keep them uncompressed.
        noCompress += listOf("pte", "tflite", "ptd", "bin")
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
    implementation(libs.litert.gpu)

    androidTestImplementation(libs.junit)
    androidTestImplementation(libs.androidx.test.runner)
    androidTestImplementation(libs.androidx.test.ext.junit)
}
