package redistest

import "syscall"

// termSignal stops redis-server gracefully (it writes its AOF).
const termSignal = syscall.SIGTERM
