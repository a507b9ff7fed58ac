package buffer

const crashChildEnv = "GEMBA_BUFFER_CRASH_DIR"

func crashChild() {}
