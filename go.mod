module github.com/coapgate/coapgate

go 1.26.8
