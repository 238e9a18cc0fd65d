package sqlitestore

// Changed implements message.Notifier: it fires after every commit that
// appends to the message log.
func (s *Store) Changed() <-chan struct{} { return s.notify.Changed() }

// notifyLog wakes everyone waiting on Changed. Call it after a commit that
// appended to the messages table.
func (s *Store) notifyLog() { s.notify.Wake() }
