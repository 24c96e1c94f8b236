package collateral

// SlotCount exposes the number of cached slots to tests.
func SlotCount(g *Getter) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.slots)
}

// KeyCount exposes the number of memoised URLs to tests.
func KeyCount(g *Getter) int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return len(g.keys)
}

// MaxKeys is maxKeys, for tests.
const MaxKeys = maxKeys
