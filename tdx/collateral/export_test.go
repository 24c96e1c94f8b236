package collateral

// SlotCount exposes the number of cached slots to tests.
func SlotCount(g *Getter) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.slots)
}
