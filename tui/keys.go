package tui

import (
	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
)

// keyMap is the console's key bindings. It is a help.KeyMap, so the
// footer and the help screen are drawn from the same bindings Update
// matches against.
type keyMap struct {
	Quit, Help, Command, Filter, Back, Enter    key.Binding
	Up, Down, Top, Bottom, PageUp, PageDown     key.Binding
	NextPane, PrevPane, Sort, Reverse, Pause    key.Binding
	Reconnect, Window, More, Less, Edit, Invoke key.Binding
	Logs, Views                                 key.Binding
}

var _ help.KeyMap = keyMap{}

func defaultKeyMap() keyMap {
	b := func(keys []string, k, d string) key.Binding {
		return key.NewBinding(key.WithKeys(keys...), key.WithHelp(k, d))
	}
	return keyMap{
		Quit:      b([]string{"q", "ctrl+c"}, "q", "quit"),
		Help:      b([]string{"?"}, "?", "help"),
		Command:   b([]string{":"}, ":", "command"),
		Filter:    b([]string{"/"}, "/", "filter"),
		Back:      b([]string{"esc"}, "esc", "back"),
		Enter:     b([]string{"enter"}, "enter", "open"),
		Up:        b([]string{"k", "up"}, "↑/k", "up"),
		Down:      b([]string{"j", "down"}, "↓/j", "down"),
		Top:       b([]string{"g", "home"}, "g", "top"),
		Bottom:    b([]string{"G", "end"}, "G", "bottom"),
		PageUp:    b([]string{"pgup", "ctrl+b"}, "pgup", "page up"),
		PageDown:  b([]string{"pgdown", "ctrl+f"}, "pgdn", "page down"),
		NextPane:  b([]string{"tab"}, "tab", "next pane/view"),
		PrevPane:  b([]string{"shift+tab"}, "⇧tab", "previous pane/view"),
		Sort:      b([]string{"s"}, "s", "sort column"),
		Reverse:   b([]string{"S"}, "S", "reverse sort"),
		Pause:     b([]string{"p"}, "p", "pause"),
		Reconnect: b([]string{"r"}, "r", "reconnect now"),
		Window:    b([]string{"w"}, "w", "window/period"),
		More:      b([]string{"+", "="}, "+", "min warm +1"),
		Less:      b([]string{"-", "_"}, "-", "min warm −1"),
		Edit:      b([]string{"e"}, "e", "edit pool"),
		Invoke:    b([]string{"i"}, "i", "invoke"),
		Logs:      b([]string{"l"}, "l", "logs"),
		Views:     b([]string{"1", "2", "3", "4", "5", "6"}, "1-6", "views"),
	}
}

// ShortHelp is a generic footer; the model picks one per view (footerKeys).
func (k keyMap) ShortHelp() []key.Binding {
	return []key.Binding{k.Command, k.Filter, k.Enter, k.Help, k.Quit}
}

// FullHelp is every binding in groups: general, moving, tables, function.
func (k keyMap) FullHelp() [][]key.Binding {
	return [][]key.Binding{
		{k.Command, k.Help, k.Back, k.Pause, k.Reconnect, k.Views, k.Quit},
		{k.Up, k.Down, k.Top, k.Bottom, k.PageUp, k.PageDown, k.NextPane},
		{k.Filter, k.Sort, k.Reverse, k.Enter, k.Window, k.Logs},
		{k.More, k.Less, k.Edit, k.Invoke},
	}
}

// helpGroupTitles name the FullHelp groups on the help screen.
var helpGroupTitles = []string{"GENERAL", "MOVE", "TABLES", "ON A FUNCTION"}
