package command

// SetPushedHook makes q call f after each push attempt has been fully
// accounted for (store and in-memory pending count). Set it before Run.
func SetPushedHook(q *Queue, f func(Command)) { q.pushed = f }
