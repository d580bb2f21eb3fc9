/** The gRPC service the README's calling snippet calls (JSON messages: no generated code needed here). */
import type grpc from '@grpc/grpc-js'

const json = { serialize: (v: unknown) => Buffer.from(JSON.stringify(v)), deserialize: (b: Buffer) => JSON.parse(b.toString()) as unknown }
export const inventoryDefinition: grpc.ServiceDefinition = {
  GetStock: {
    path: '/demo.Inventory/GetStock',
    requestStream: false,
    responseStream: false,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
}
