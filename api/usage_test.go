package api

import "testing"

func TestUsageAddAndPrice(t *testing.T) {
	p := Prices{PerGBSecond: 2, PerMillionRequests: 1e6, WarmthPerGBSecond: 0.5}
	tests := []struct {
		name string
		a, b Usage
		want Usage
	}{
		{"quantities", Usage{Requests: 1, GBSeconds: 1}, Usage{Requests: 2, Errors: 1, ColdStarts: 1, BilledMs: 5, GBSeconds: 2, WarmthSeconds: 3, WarmthGBSeconds: 4},
			Usage{Requests: 3, Errors: 1, ColdStarts: 1, BilledMs: 5, GBSeconds: 3, WarmthSeconds: 3, WarmthGBSeconds: 4, RequestCost: 3, ComputeCost: 6, WarmthCost: 2, Cost: 11}},
		{"zero", Usage{}, Usage{}, Usage{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sum := tc.a
			sum.Add(tc.b)
			sum.Price(p)
			if sum != tc.want {
				t.Fatalf("got %+v\nwant %+v", sum, tc.want)
			}
			// Adding priced usages gives the price of the sum.
			pa, pb := tc.a, tc.b
			pa.Price(p)
			pb.Price(p)
			pa.Add(pb)
			if pa.Cost != sum.Cost {
				t.Fatalf("sum of costs %v, cost of the sum %v", pa.Cost, sum.Cost)
			}
		})
	}
}
