package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// showHub prints what the hub holds at the end: the stock each SKU gained from production and the
// availability of each line, read through its API as the console will.
func showHub(base string) error {
	var inv struct {
		Positions []struct {
			SKU, Site string
			Produced  float64 `json:"produced"`
			Position  float64 `json:"position"`
		} `json:"positions"`
	}
	var feats struct {
		Values []struct {
			Name, Key string
			Value     float64   `json:"value"`
			WindowEnd time.Time `json:"window_end"`
			Stale     bool      `json:"stale"`
		} `json:"values"`
	}
	if err := getJSON(base+"/api/v1/inventory", &inv); err != nil {
		return fmt.Errorf("hub inventory: %w", err)
	}
	if err := getJSON(base+"/api/v1/features?name=availability", &feats); err != nil {
		return fmt.Errorf("hub features: %w", err)
	}
	fmt.Printf("\nthe hub (%s):\n", base)
	for _, p := range inv.Positions {
		fmt.Printf("  %-8s at %-10s produced %6.0f units, position %6.0f\n", p.SKU, p.Site, p.Produced, p.Position)
	}
	for _, v := range feats.Values {
		stale := ""
		if v.Stale {
			stale = " (stale)"
		}
		fmt.Printf("  %-8s availability %.2f in the window ending %s%s\n", v.Key, v.Value, v.WindowEnd.Format(time.TimeOnly), stale)
	}
	if len(inv.Positions) == 0 {
		return fmt.Errorf("the hub holds no inventory: production did not reach it")
	}
	return showDecisions(base)
}

// showDecisions prints the hub's latest decisions, oldest first, and how to ask why.
func showDecisions(base string) error {
	var ds struct {
		Decisions []struct {
			ID      string    `json:"decision_id"`
			Time    time.Time `json:"time"`
			Outcome string    `json:"outcome"`
			SKU     string    `json:"sku"`
			Channel string    `json:"channel"`
			Rule    struct {
				Name string `json:"name"`
			} `json:"rule"`
		} `json:"decisions"`
	}
	if err := getJSON(base+"/api/v1/decisions?limit=20", &ds); err != nil {
		return fmt.Errorf("hub decisions: %w", err)
	}
	fmt.Printf("\nthe hub's latest decisions (%d):\n", len(ds.Decisions))
	for i := len(ds.Decisions) - 1; i >= 0; i-- {
		d := ds.Decisions[i]
		fmt.Printf("  %s  %-8s %-10s %-22s %-18s %s\n", d.Time.Format(time.TimeOnly), d.SKU, d.Channel, d.Rule.Name, d.Outcome, d.ID)
	}
	if len(ds.Decisions) == 0 {
		return nil
	}
	// Explain one that acted if there is one (the newest otherwise), as `gemba-hub why` would.
	id := ds.Decisions[0].ID
	for _, d := range ds.Decisions {
		if d.Outcome == "fired" || d.Outcome == "held" {
			id = d.ID
			break
		}
	}
	fmt.Printf("\nwhy %s (gemba-hub why, or: curl -H 'Accept: text/plain' %s/api/v1/decisions/%s):\n", id, base, id)
	req, err := http.NewRequest(http.MethodGet, base+"/api/v1/decisions/"+id, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/plain")
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("hub why: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for n := 0; sc.Scan() && n < 30; n++ {
		fmt.Println("  " + sc.Text())
	}
	return sc.Err()
}

func getJSON(url string, out any) error {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
