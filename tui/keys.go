package tui

import (
	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
)

// keyMap is the console's key bindings. It is a help.KeyMap, so the
// footer is drawn from the same bindings Update matches against.
type keyMap struct {
	Quit      key.Binding
	NextTable key.Binding
	Up        key.Binding
	Down      key.Binding
	Top       key.Binding
	Bottom    key.Binding
	Refresh   key.Binding
	Help      key.Binding
}

var _ help.KeyMap = keyMap{}

// Help texts of the ? binding while the full help is closed and open.
const (
	helpOpenDesc  = "help"
	helpCloseDesc = "close help"
)

func defaultKeyMap() keyMap {
	return keyMap{
		Quit:      key.NewBinding(key.WithKeys("q", "ctrl+c"), key.WithHelp("q", "quit")),
		NextTable: key.NewBinding(key.WithKeys("tab", "shift+tab"), key.WithHelp("tab", "next table")),
		Up:        key.NewBinding(key.WithKeys("k", "up"), key.WithHelp("↑/k", "up")),
		Down:      key.NewBinding(key.WithKeys("j", "down"), key.WithHelp("↓/j", "down")),
		Top:       key.NewBinding(key.WithKeys("g", "home"), key.WithHelp("g/home", "top")),
		Bottom:    key.NewBinding(key.WithKeys("G", "end"), key.WithHelp("G/end", "bottom")),
		Refresh:   key.NewBinding(key.WithKeys("r"), key.WithHelp("r", "refresh")),
		Help:      key.NewBinding(key.WithKeys("?"), key.WithHelp("?", helpOpenDesc)),
	}
}

// ShortHelp is the one-line footer, most important first: the help
// bubble drops items from the end when the screen is narrow.
func (k keyMap) ShortHelp() []key.Binding {
	return []key.Binding{k.Quit, k.Help, k.NextTable, k.Up, k.Down, k.Refresh}
}

// FullHelp is the full help in three columns: moving, tables, the rest.
func (k keyMap) FullHelp() [][]key.Binding {
	return [][]key.Binding{
		{k.Up, k.Down, k.Top, k.Bottom},
		{k.NextTable, k.Refresh},
		{k.Help, k.Quit},
	}
}

// fullHelpLayouts are the groupings the full help tries, widest first;
// the view takes the first that fits the screen.
func (k keyMap) fullHelpLayouts() [][][]key.Binding {
	return [][][]key.Binding{
		k.FullHelp(),
		{
			{k.Up, k.Down, k.Top, k.Bottom},
			{k.NextTable, k.Refresh, k.Help, k.Quit},
		},
		{
			{k.Up, k.Down, k.Top, k.Bottom, k.NextTable, k.Refresh, k.Help, k.Quit},
		},
	}
}
