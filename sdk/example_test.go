package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/coapgate/coapgate/sdk"
)

func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, "127.0.0.1:5683", sdk.WithCredentials(sdk.Credentials{
		ProductKey:   "a1MZxOdcBnO",
		DeviceName:   "test_01",
		DeviceSecret: "t9GmMf2jb3LgWfXBaZD2r3aJrfVWBv56",
	}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	// The first publish authenticates (POST /auth) by itself.
	resp, err := c.PostMeasurePoints(ctx, map[string]any{"temp": 21.5}, time.Now())
	var se *sdk.StatusError
	switch {
	case errors.As(err, &se) && se.Code == codes.Forbidden:
		fmt.Println("topic not allowed or device disabled")
		return
	case err != nil:
		fmt.Println(err)
		return
	}
	reply, err := resp.Reply()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.MessageID, reply.Code, reply.Message)
}
