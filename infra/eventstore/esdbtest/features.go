package esdbtest

import (
	"context"

	"github.com/google/uuid"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/gossip"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/serverfeatures"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
)

// featuresService answers GetSupportedMethods, which the client calls on
// every (re)connection to learn the server version and optional features.
// Only the implemented methods are listed: advertising e.g.
// persistentsubscriptions.create with "all" would make the client use them.
type featuresService struct {
	serverfeatures.UnimplementedServerFeaturesServer
	srv *Server
}

func (f *featuresService) GetSupportedMethods(context.Context, *shared.Empty) (*serverfeatures.SupportedMethods, error) {
	const (
		streamsSvc  = "event_store.client.streams.streams"
		gossipSvc   = "event_store.client.gossip.gossip"
		featuresSvc = "event_store.client.server_features.serverfeatures"
	)
	return &serverfeatures.SupportedMethods{
		EventStoreServerVersion: f.srv.opts.Version,
		Methods: []*serverfeatures.SupportedMethod{
			{ServiceName: streamsSvc, MethodName: "read", Features: []string{"position", "events"}},
			{ServiceName: streamsSvc, MethodName: "append"},
			{ServiceName: gossipSvc, MethodName: "read"},
			{ServiceName: featuresSvc, MethodName: "getsupportedmethods"},
		},
	}, nil
}

// gossipService describes a one-node cluster whose leader is this server.
type gossipService struct {
	gossip.UnimplementedGossipServer
	srv *Server
}

func (g *gossipService) Read(context.Context, *shared.Empty) (*gossip.ClusterInfo, error) {
	host, port := g.srv.hostPort()
	return &gossip.ClusterInfo{Members: []*gossip.MemberInfo{{
		InstanceId:   toProtoUUID(uuid.NewSHA1(uuid.NameSpaceURL, []byte("esdbtest://"+g.srv.addr)), false),
		TimeStamp:    g.srv.ticks(),
		State:        gossip.MemberInfo_Leader,
		IsAlive:      true,
		HttpEndPoint: &gossip.EndPoint{Address: host, Port: port},
	}}}, nil
}
