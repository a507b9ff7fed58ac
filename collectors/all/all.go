// Package all registers every collector type; import it for its side effect.
package all

import (
	_ "github.com/gemba-io/gemba/collectors/mqtt"  // type: mqtt
	_ "github.com/gemba-io/gemba/collectors/opcua" // type: opcua
)
